"""API keys and avatars (issue 3).

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "avatars",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("family", sa.String(16), nullable=True),
        sa.Column("cross_attention_dim", sa.Integer(), nullable=True),
        sa.Column("trigger_words", sa.JSON(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_avatars"),
        sa.UniqueConstraint("owner_id", "kind", "name", name="uq_avatars_owner_id_kind_name"),
        sa.UniqueConstraint("owner_id", "kind", "token", name="uq_avatars_owner_id_kind_token"),
    )
    op.create_index("ix_avatars_owner_id", "avatars", ["owner_id"])
    op.create_table(
        "avatar_files",
        sa.Column("avatar_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["avatar_id"], ["avatars.id"], name="fk_avatar_files_avatar_id_avatars", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("avatar_id", "position", name="pk_avatar_files"),
    )
    op.create_index("ix_avatar_files_digest", "avatar_files", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_avatar_files_digest", table_name="avatar_files")
    op.drop_table("avatar_files")
    op.drop_index("ix_avatars_owner_id", table_name="avatars")
    op.drop_table("avatars")
    op.drop_table("api_keys")
