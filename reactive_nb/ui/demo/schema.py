"""The demo's schema and vocabulary: five organizations (the tenants), their users,
agents, tools and messages, and the words the generated rows are made of."""

from __future__ import annotations

import random

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

ORGANIZATIONS = [
    ("acme", "Acme Corp", "enterprise"),
    ("globex", "Globex", "team"),
    ("initech", "Initech", "team"),
    ("umbrella", "Umbrella", "enterprise"),
    ("hooli", "Hooli", "starter"),
]
ROLES = ["support", "sales", "research", "ops", "billing", "triage"]
STATUSES = ["idle", "busy", "offline"]
MODELS = ["small-2", "medium-3", "large-4"]
TOOLS = ["search", "crm.lookup", "calendar", "refund", "translate", "sql", "email", "slack"]
CHANNELS = ["chat", "email", "slack", "phone"]
FIRST = ["Ada", "Bob", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai",
         "Lena", "Mo", "Noor", "Omar", "Pia", "Quinn", "Rui", "Sara", "Tom"]
LAST = ["Lovelace", "Ng", "Okafor", "Silva", "Berg", "Haddad", "Kim", "Novak", "Rossi", "Sato"]
AGENT_NAMES = ["Atlas", "Beacon", "Cosmo", "Delta", "Echo", "Flux", "Gizmo", "Halo", "Iris",
               "Juno", "Kite", "Lumen", "Milo", "Nova", "Orbit", "Pixel", "Quill", "Rex"]
SUBJECTS = ["the invoice", "my order", "the refund", "our contract", "the API key", "login",
            "the dashboard", "shipping", "the export", "a bug report", "the meeting", "SSO"]
VERBS = ["Question about", "Update on", "Problem with", "Follow-up on", "Escalating",
         "Thanks for", "Reminder about", "Need help with"]

metadata = MetaData()

organization = Table(
    "organization", metadata,
    Column("id", String(20), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("plan", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("email", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_users_org", "organization_id"),
)
agent = Table(
    "agent", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("role", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("model", String(40), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_agent_org", "organization_id"),
)
tool = Table(
    "tool", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("agent_id", Integer, ForeignKey("agent.id"), nullable=False),
    Column("name", String(50), nullable=False),
    Column("calls", Integer, nullable=False),
    Index("ix_tool_org", "organization_id"),
)
message = Table(
    "message", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("from_agent_id", Integer, ForeignKey("agent.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_message_org_id", "organization_id", "id"),
)

#: The demo's tables, parents first.
TABLES = [t.name for t in metadata.sorted_tables]


def message_body(rng: random.Random) -> str:
    """A customer message's text, drawn from the vocabulary above."""
    return f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)} (#{rng.randint(1000, 9999)})"
