import dagster as dg

# One partition per UTC day a file arrived: the landing zone holds <YYYY-MM-DD>/<file>.
video_daily = dg.DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")

USERS_FILE = "users.csv"
SESSIONS_FILE = "viewing_sessions.csv"
CONTENT_FILE = "content.json"
FAILED = "failed/"  # a file that cannot be loaded goes here, under its own path, with its report


def landed_path(partition_key: str, file_name: str) -> str:
    return f"{partition_key}/{file_name}"
