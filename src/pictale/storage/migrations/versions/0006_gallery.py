"""The per-key gallery of generated images.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-11
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_images",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("infotext", sa.Text(), nullable=False),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gallery_images"),
    )
    op.create_index("ix_gallery_images_owner_id", "gallery_images", ["owner_id"])
    op.create_index("ix_gallery_images_created_at", "gallery_images", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_gallery_images_created_at", table_name="gallery_images")
    op.drop_index("ix_gallery_images_owner_id", table_name="gallery_images")
    op.drop_table("gallery_images")
