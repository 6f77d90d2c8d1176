"""Migrations as Sequelize runs them: files applied in name order, each recorded by
file name in "SequelizeMeta". A file holds `-- up` and (optionally) `-- down` SQL.

usage: migrate.py up | undo | status
"""

import os
import sys
from pathlib import Path

import psycopg

MIGRATIONS = Path(__file__).with_name("migrations")
META = 'CREATE TABLE IF NOT EXISTS "SequelizeMeta" (name VARCHAR(255) NOT NULL PRIMARY KEY)'


def sections(path: Path) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        marker = line.strip().lower()
        if marker in ("-- up", "-- down"):
            current = marker[3:]
            parts[current] = []
        elif current:
            parts[current].append(line)
    return {k: "\n".join(v).strip() for k, v in parts.items()}


def applied(conn) -> list[str]:
    conn.execute(META)
    return [r[0] for r in conn.execute('SELECT name FROM "SequelizeMeta" ORDER BY name')]


def main(command: str) -> int:
    files = sorted(MIGRATIONS.glob("*.sql"))
    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        conn.autocommit = True
        done = applied(conn)
        if command == "status":
            for f in files:
                print(("up   " if f.name in done else "down ") + f.name)
            return 0
        if command == "up":
            for f in files:
                if f.name in done:
                    continue
                with conn.transaction():
                    conn.execute(sections(f)["up"])
                    conn.execute('INSERT INTO "SequelizeMeta" (name) VALUES (%s)', (f.name,))
                print(f"== {f.name}: migrated", flush=True)
            return 0
        if command == "undo":
            if not done:
                print("No executed migrations found.")
                return 0
            name = done[-1]
            down = sections(MIGRATIONS / name).get("down") if (MIGRATIONS / name).exists() else None
            if not down:
                print(f"ERROR: {name} has no down step", file=sys.stderr)
                return 3
            with conn.transaction():
                conn.execute(down)
                conn.execute('DELETE FROM "SequelizeMeta" WHERE name = %s', (name,))
            print(f"== {name}: reverted", flush=True)
            return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
