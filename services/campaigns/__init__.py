"""Campaigns: the `campaigner` role (services.campaigns.campaigner) sends them."""
