"""The database tables (SQLAlchemy 2 ORM). Changes here need a migration in storage/migrations/versions/."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names: Alembic can only drop or alter what it can name (SQLite batch mode needs them too).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiKey(Base):
    """An API key. Only the sha256 of the key is stored; `prefix` is what listings show."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Avatar(Base):
    """A named avatar of one owner (an API key id, `basic:<user>` or `local`)."""

    __tablename__ = "avatars"
    __table_args__ = (
        UniqueConstraint("owner_id", "kind", "name"),
        UniqueConstraint("owner_id", "kind", "token"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(32))
    token: Mapped[str | None] = mapped_column(String(64), default=None)
    """Embeddings: the token the user chose (the engine uses an internal one derived from `digest`)."""
    family: Mapped[str | None] = mapped_column(String(16), default=None)
    cross_attention_dim: Mapped[int | None] = mapped_column(Integer, default=None)
    trigger_words: Mapped[list[str]] = mapped_column(JSON, default=list)
    digest: Mapped[str] = mapped_column(String(64))
    """sha256 over the files' digests in order: the engine's cache key."""
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)

    files: Mapped[list[AvatarFile]] = relationship(
        back_populates="avatar",
        cascade="all, delete-orphan",
        order_by="AvatarFile.position",
        lazy="selectin",
        passive_deletes=True,
    )


class AvatarFile(Base):
    """One blob of an avatar, in upload order."""

    __tablename__ = "avatar_files"

    avatar_id: Mapped[int] = mapped_column(ForeignKey("avatars.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)

    avatar: Mapped[Avatar] = relationship(back_populates="files")


class CharacterRow(Base):
    """A story character of one owner: `<be-char:name>` in a prompt expands to its description and avatars."""

    __tablename__ = "characters"
    __table_args__ = (UniqueConstraint("owner_id", "name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    """As the user wrote it ("Sasha"); listings show it."""
    name_key: Mapped[str] = mapped_column(String(64))
    """The lower-cased name: names are unique per owner case-insensitively, portably (no functional index)."""
    description: Mapped[str] = mapped_column(Text, default="")
    avatars: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed_policy: Mapped[str] = mapped_column(String(16), default="random")
    seed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
