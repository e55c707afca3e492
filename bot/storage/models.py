"""What the trainer learnt about model servers: structured-output modes and decode slots."""

from __future__ import annotations

from bot.storage.base import StorePart
from bot.storage.rows import utc_now


class ModelServerStore(StorePart):
    """Findings about OpenAI-compatible servers, replaced when found again."""

    def recall_mode(self, base_url: str | None, model: str) -> tuple[str, str] | None:
        """The structured mode last found for a server and model, and when."""
        row = self.backend.fetchone(
            "SELECT mode, found_at FROM llm_modes WHERE base_url = ? AND model = ?",
            [base_url or "", model],
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_mode(self, base_url: str | None, model: str, mode: str) -> None:
        """Store the structured mode a server and model take (replacing an older finding)."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO llm_modes (base_url, model, mode, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (base_url, model) DO UPDATE SET mode = excluded.mode,"
                " found_at = excluded.found_at",
                [base_url or "", model, mode, utc_now()],
            )

    def recall_slots(self, base_url: str | None) -> tuple[int, str] | None:
        """How many requests the server decodes at once, and how that was found."""
        row = self.backend.fetchone(
            "SELECT slots, how FROM llm_servers WHERE base_url = ?", [base_url or ""]
        )
        return None if row is None else (int(row[0]), str(row[1]))

    def remember_slots(self, base_url: str | None, slots: int, how: str) -> None:
        """Store how many requests a server decodes at once (``how``: reported, measured)."""
        with self._tx() as tx:
            tx.execute(
                "INSERT INTO llm_servers (base_url, slots, how, found_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (base_url) DO UPDATE SET slots = excluded.slots,"
                " how = excluded.how, found_at = excluded.found_at",
                [base_url or "", slots, how, utc_now()],
            )
