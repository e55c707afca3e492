"""People and teams.

Chat-app users, linked identities, teams, invites, assignments and the browsers signed
in to the web app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from bot.storage.base import StorePart
from bot.storage.rows import (
    AssignmentRow,
    DeviceRow,
    InviteListing,
    InviteRow,
    TeamRow,
    UserRow,
    utc_now,
)


class PeopleStore(StorePart):
    """Users, identities and link codes, teams and memberships, invites, assignments, devices."""

    _USER_SQL = (
        "SELECT u.id, u.platform, u.external_id, u.chat_id, u.name, u.username, u.lang,"
        " u.is_admin, t.name FROM users u JOIN trainees t ON t.id = u.trainee_id"
    )

    @staticmethod
    def _user(row: tuple[Any, ...]) -> UserRow:
        uid, platform, external_id, chat_id, name, username, lang, is_admin, trainee = row
        return UserRow(
            uid, platform, external_id, chat_id, name, username, lang, bool(is_admin), trainee
        )

    def upsert_user(
        self,
        platform: str,
        external_id: str,
        *,
        name: str,
        lang: str,
        chat_id: str | None = None,
        username: str | None = None,
    ) -> UserRow:
        """Create the user on first contact; later calls refresh name, username and chat."""
        existing = self.user_by_external(platform, external_id)
        if existing is None:
            trainee_id = self.trainee_id(f"{platform}:{external_id}")
            with self._tx() as tx:
                tx.execute(
                    "INSERT INTO users (platform, external_id, chat_id, name, username, lang,"
                    " is_admin, trainee_id, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)"
                    " ON CONFLICT (platform, external_id) DO NOTHING",
                    [platform, external_id, chat_id, name, username, lang, trainee_id,
                     utc_now()],
                )  # fmt: skip
        elif (existing.name, existing.username) != (name, username) or (
            chat_id is not None and existing.chat_id != chat_id
        ):
            with self._tx() as tx:
                tx.execute(
                    "UPDATE users SET name = ?, username = ?, chat_id = COALESCE(?, chat_id)"
                    " WHERE id = ?",
                    [name, username, chat_id, existing.id],
                )
        else:
            return existing  # unchanged: no need to read it again
        user = self.user_by_external(platform, external_id)
        assert user is not None
        return user

    def user_by_external(self, platform: str, external_id: str) -> UserRow | None:
        """A user by their chat-app identity (or the account that identity was linked to)."""
        row = self.backend.fetchone(
            self._USER_SQL + " WHERE u.id = (SELECT user_id FROM identities"
            " WHERE platform = ? AND external_id = ?)",
            [platform, external_id],
        ) or self.backend.fetchone(
            self._USER_SQL + " WHERE u.platform = ? AND u.external_id = ?",
            [platform, external_id],
        )
        return self._user(row) if row else None

    def link_identity(self, platform: str, external_id: str, user_id: int) -> None:
        """From now on, this chat-app identity signs in as ``user_id``."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO identities (platform, external_id, user_id, created_at)"
                " VALUES (?, ?, ?, ?)",
                [platform, external_id, user_id, utc_now()],
            )

    def add_link_code(self, code_sha: str, user_id: int) -> None:
        """A one-time code that links another channel to ``user_id``."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO link_codes (code_sha, user_id, created_at) VALUES (?, ?, ?)",
                [code_sha, user_id, utc_now()],
            )

    def use_link_code(self, code_sha: str, max_age_s: float) -> int | None:
        """Spend a link code younger than ``max_age_s``: the user it links to (None: no such)."""
        oldest = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=max_age_s)).isoformat(
            timespec="milliseconds"
        )
        with self._tx() as tx:
            changed = tx.execute(
                "UPDATE link_codes SET used_at = ? WHERE code_sha = ? AND used_at IS NULL"
                " AND created_at >= ?",
                [utc_now(), code_sha, oldest],
            )
            if changed != 1:
                return None
            row = tx.fetchone("SELECT user_id FROM link_codes WHERE code_sha = ?", [code_sha])
        assert row is not None
        return int(row[0])

    def has_history(self, user_id: int) -> bool:
        """Whether a user has sessions or memberships (an account with records of its own)."""
        row = self.backend.fetchone(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE user_id = ?)"
            " OR EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.trainee_id = s.trainee_id"
            " WHERE u.id = ?)",
            [user_id, user_id],
        )
        return bool(row and row[0])

    def user_by_trainee(self, trainee: str) -> UserRow | None:
        """The chat-app user whose sessions run under the engine's trainee name."""
        row = self.backend.fetchone(self._USER_SQL + " WHERE t.name = ?", [trainee])
        return self._user(row) if row else None

    def user(self, user_id: int) -> UserRow | None:
        """A user by id."""
        row = self.backend.fetchone(self._USER_SQL + " WHERE u.id = ?", [user_id])
        return self._user(row) if row else None

    def find_users(self, token: str) -> list[UserRow]:
        """Users whose id, chat-app id or @username is ``token``."""
        token = token.removeprefix("@")
        as_int = int(token) if token.isdigit() and len(token) < 19 else -1
        rows = self.backend.fetchall(
            self._USER_SQL + " WHERE u.id = ? OR u.external_id = ? OR lower(u.username) = lower(?)",
            [as_int, token, token],
        )
        return [self._user(r) for r in rows]

    def set_user_lang(self, user_id: int, lang: str) -> None:
        """Remember the user's language."""
        with self._tx() as tx:
            tx.execute("UPDATE users SET lang = ? WHERE id = ?", [lang, user_id])

    def set_admin(self, user_id: int) -> None:
        """Make the user an administrator."""
        with self._tx() as tx:
            tx.execute("UPDATE users SET is_admin = 1 WHERE id = ?", [user_id])

    def has_admin(self) -> bool:
        """Whether any user is an admin."""
        return self.backend.fetchone("SELECT 1 FROM users WHERE is_admin = 1 LIMIT 1") is not None

    def create_team(self, name: str) -> TeamRow:
        """Create a team (names are unique)."""
        with self._tx() as tx:
            team_id = tx.insert(
                "INSERT INTO teams (name, created_at) VALUES (?, ?)", [name, utc_now()]
            )
        return TeamRow(team_id, name)

    def team(self, team_id: int) -> TeamRow | None:
        """A team by id."""
        row = self.backend.fetchone("SELECT id, name FROM teams WHERE id = ?", [team_id])
        return TeamRow(*row) if row else None

    def team_by_name(self, name: str) -> TeamRow | None:
        """A team by name (case-insensitive)."""
        row = self.backend.fetchone(
            "SELECT id, name FROM teams WHERE lower(name) = lower(?)", [name]
        )
        return TeamRow(*row) if row else None

    def teams(self) -> list[TeamRow]:
        """All teams by name."""
        rows = self.backend.fetchall("SELECT id, name FROM teams ORDER BY name")
        return [TeamRow(*r) for r in rows]

    def add_member(self, team_id: int, user_id: int, role: str) -> None:
        """Add a user to a team as mentor or trainee (no-op if already there)."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO memberships (team_id, user_id, role, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (team_id, user_id, role) DO NOTHING",
                [team_id, user_id, role, utc_now()],
            )

    def memberships(self, user_id: int) -> list[tuple[int, str]]:
        """(team id, role) pairs of a user."""
        rows = self.backend.fetchall(
            "SELECT team_id, role FROM memberships WHERE user_id = ? ORDER BY team_id", [user_id]
        )
        return [(int(t), str(r)) for t, r in rows]

    def members(self, team_id: int, role: str) -> list[UserRow]:
        """Users with ``role`` in a team, by name."""
        rows = self.backend.fetchall(
            self._USER_SQL + " JOIN memberships m ON m.user_id = u.id"
            " WHERE m.team_id = ? AND m.role = ? ORDER BY u.name, u.id",
            [team_id, role],
        )
        return [self._user(r) for r in rows]

    def create_invite(
        self, code: str, *, team_id: int | None, role: str, max_uses: int, created_by: int | None
    ) -> None:
        """Store an invite code."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO invites (code, team_id, role, max_uses, uses, created_by,"
                " created_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                [code, team_id, role, max_uses, created_by, utc_now()],
            )

    def use_invite(self, code: str) -> InviteRow | None:
        """Spend one use of an invite; ``None`` if unknown, revoked or used up."""
        with self._tx() as tx:
            changed = tx.execute(
                "UPDATE invites SET uses = uses + 1 WHERE code = ? AND uses < max_uses"
                " AND revoked_at IS NULL",
                [code],
            )
            if changed != 1:
                return None
            row = tx.fetchone(
                "SELECT code, team_id, role, max_uses, uses FROM invites WHERE code = ?", [code]
            )
        return None if row is None else InviteRow(*row)

    def invites(self, team_ids: Iterable[int] | None = None) -> list[InviteListing]:
        """Invites, newest first: all of them, or those of these teams."""
        sql = (
            "SELECT code, team_id, role, max_uses, uses, created_by, created_at, revoked_at"
            " FROM invites"
        )
        params: list[Any] = []
        if team_ids is not None:
            params = list(team_ids)
            if not params:
                return []
            sql += f" WHERE team_id IN ({','.join('?' * len(params))})"
        rows = self.backend.fetchall(sql + " ORDER BY created_at DESC, code", params)
        return [InviteListing(*r) for r in rows]

    def revoke_invite(self, code: str) -> None:
        """Stop an invite from being used again (uses so far stand)."""
        with self._tx() as tx:
            tx.execute(
                "UPDATE invites SET revoked_at = ? WHERE code = ? AND revoked_at IS NULL",
                [utc_now(), code],
            )

    _ASSIGNMENT_SQL = (
        "SELECT id, team_id, user_id, scenario_id, difficulty, mode, rubric, due, pass_mark,"
        " attempts, created_by, created_at FROM assignments"
    )

    def add_assignment(
        self,
        *,
        team_id: int,
        user_id: int | None,
        scenario_id: str,
        difficulty: str,
        mode: str,
        rubric: str,
        due: str | None,
        pass_mark: float,
        attempts: int | None,
        created_by: int | None,
    ) -> AssignmentRow:
        """Store an assignment for a team (``user_id`` None) or one trainee in it."""
        with self._tx() as tx:
            new_id = tx.insert(
                "INSERT INTO assignments (team_id, user_id, scenario_id, difficulty, mode, rubric,"
                " due, pass_mark, attempts, created_by, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [team_id, user_id, scenario_id, difficulty, mode, rubric, due, pass_mark,
                 attempts, created_by, utc_now()],
            )  # fmt: skip
        found = self.assignment(new_id)
        assert found is not None
        return found

    def assignment(self, assignment_id: int) -> AssignmentRow | None:
        """An assignment by id."""
        row = self.backend.fetchone(self._ASSIGNMENT_SQL + " WHERE id = ?", [assignment_id])
        return AssignmentRow(*row) if row else None

    def assignments(self, team_ids: Iterable[int]) -> list[AssignmentRow]:
        """Assignments of these teams, soonest due first."""
        ids = list(team_ids)
        if not ids:
            return []
        rows = self.backend.fetchall(
            self._ASSIGNMENT_SQL + f" WHERE team_id IN ({','.join('?' * len(ids))})"
            " ORDER BY due IS NULL, due, id",
            ids,
        )
        return [AssignmentRow(*r) for r in rows]

    # web devices (a browser's sign-in; the token itself is never stored)

    def add_device(self, user_id: int, token_sha: str, label: str) -> int:
        """Record a signed-in browser; its id."""
        with self._tx() as tx:
            return tx.insert(
                "INSERT INTO web_devices (user_id, token_sha, label, created_at)"
                " VALUES (?, ?, ?, ?)",
                [user_id, token_sha, label[:120], utc_now()],
            )

    def devices(self, user_ids: Iterable[int]) -> list[DeviceRow]:
        """The signed-in browsers of these users, newest first (revoked ones too)."""
        ids = list(user_ids)
        if not ids:
            return []
        rows = self.backend.fetchall(
            "SELECT id, user_id, token_sha, label, created_at, revoked_at FROM web_devices"
            f" WHERE user_id IN ({','.join('?' * len(ids))}) ORDER BY id DESC",
            ids,
        )
        return [DeviceRow(*r) for r in rows]

    def revoke_device(self, device_id: int) -> None:
        """Sign a browser out for good (its cookie no longer signs in)."""
        with self._tx() as tx:
            tx.execute(
                "UPDATE web_devices SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [utc_now(), device_id],
            )

    def device_user(self, token_sha: str) -> int | None:
        """The user a browser's token signs in, unless the device was revoked."""
        row = self.backend.fetchone(
            "SELECT user_id FROM web_devices WHERE token_sha = ? AND revoked_at IS NULL",
            [token_sha],
        )
        return None if row is None else int(row[0])
