"""The post-office hub (CONTRACT section 12): remote service clients over WebSocket."""
