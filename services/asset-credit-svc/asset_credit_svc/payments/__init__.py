"""Top-ups through payment providers (Alipay, WeChat Pay; a sandbox of each for now)."""
