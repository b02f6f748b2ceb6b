"""Integrations: the outbox of events for webhooks and Zendesk, and referrals with SLA timers."""
