"""SMS (and WhatsApp through Twilio): Twilio's messaging webhook, status callback and REST client."""
