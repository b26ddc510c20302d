"""Social channels: Meta (WhatsApp Cloud API, Messenger, Instagram) and Telegram."""
