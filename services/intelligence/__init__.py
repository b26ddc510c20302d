"""Customer intelligence: classification of what customers say (language, sentiment, intent)."""
