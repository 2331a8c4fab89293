"""The weather service client of seed 004 (the GO-POSTOFFICE guide), for libchat.

Unchanged but for what the comments marked "libchat:" say: its URL constants
point at libchat's post office (overridable by the SOCKET_URL and TOKEN_URL
environment variables), and websockets >= 14 calls the header argument
``additional_headers``. Run: ``pip install websockets requests python-dotenv``,
put APPID and SECRET (an app of the ``[postoffice.apps.APPID]`` table) in the
environment or a ``.env`` file, then ``python examples/remote_weather.py``.
Test: tests/postoffice/test_seed_client.py.
"""
import asyncio
import websockets
import json
import requests
import os
from dotenv import load_dotenv

# 加载环境变量
load_dotenv()

# 配置
# libchat: the URLs of libchat's post office (twistd libchat --postoffice ...)
SOCKET_URL = os.getenv("SOCKET_URL", "ws://127.0.0.1:8090/")
TOKEN_URL = os.getenv("TOKEN_URL", "http://127.0.0.1:8090/token")
APPID = os.getenv("APPID")
SECRET = os.getenv("SECRET")
WEATHER_API_KEY = os.getenv("WEATHER_API_KEY")
CLIENT_ID = "/service/zhycit/weather_1"  # 天气服务客户端ID

# 获取token
def get_token():
    response = requests.get(f"{TOKEN_URL}?appid={APPID}&secret={SECRET}")
    data = response.json()
    return data["token"]

# 模拟天气查询
def get_weather(city):
    # 这里应该使用实际的天气API，这里只是一个模拟
    return f"{city}的天气：晴天，温度25°C"

# 处理接收到的消息
async def handle_message(websocket, message):
    data = json.loads(message)
    if data["type"] == "msg" and "天气" in data["content"]:
        city = data["content"].split("天气")[0]
        weather = get_weather(city)
        response = {
            "from": CLIENT_ID,
            "to": data["from"],  # 回复给发送消息的聊天机器人
            "subject": "天气查询结果",
            "content": weather,
            "type": "msg"
        }
        await websocket.send(json.dumps(response))

# 主要的WebSocket客户端逻辑
async def weather_service():
    token = get_token()
    uri = f"{SOCKET_URL}?clientID={CLIENT_ID}"
    headers = {"Authorization": f"Bearer {token}"}

    # libchat: websockets >= 14 names the argument additional_headers (was extra_headers)
    async with websockets.connect(uri, additional_headers=headers) as websocket:
        print(f"Connected to {uri}")

        while True:
            try:
                message = await websocket.recv()
                print(f"Received: {message}")
                await handle_message(websocket, message)
            except websockets.exceptions.ConnectionClosed:
                print("Connection closed. Reconnecting...")
                break

# 运行客户端
async def main():
    while True:
        try:
            await weather_service()
        except Exception as e:
            print(f"Error occurred: {e}")
        print("Reconnecting in 5 seconds...")
        await asyncio.sleep(5)

if __name__ == "__main__":
    asyncio.get_event_loop().run_until_complete(main())
