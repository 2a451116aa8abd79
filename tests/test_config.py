"""Settings: sources and their priority, legacy names, one-line errors, secrets kept secret."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from ibot.config import ConfigError, Settings, fail_on_config_error, load_settings
from ibot.domain import Feature

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-proj-config-test-0123456789abcdef"
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA.GhIjKl.config-test-token-abcdefghijklmnop"

LEGACY_NAMES = (
    "BOT_TOKEN",
    "DISCORD_TOKEN",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "FORUM_CHANNEL_IDS",
    "GPT_CHANNEL_ID",
    "IBOT_CONFIG",
)


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No host variable, no real config/ibot.toml or .env: each test builds its own."""
    for name in LEGACY_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("config error: ")
    return caught.value


def test_defaults_load_without_any_file():
    settings = load_settings()

    assert settings.discord_token is None and settings.openai_api_key is None
    assert settings.database_url == "sqlite+aiosqlite:///./data/ibot.db"
    assert settings.prompts.language == "fr"
    assert settings.discord.no_bot_tags == ["no-bot", "sans-bot"]
    assert settings.discord.presence == "t'aider dans les forums"
    assert settings.feature(Feature.ASK).model == "gpt-4o"
    assert settings.feature(Feature.SUMMARY).model == "gpt-4o-mini"
    assert settings.feature(Feature.CHAT).max_output_tokens == 600
    assert settings.feature(Feature.AUTO_REPLY).max_prompt_tokens == 12000
    assert settings.feature(Feature.AUTO_REPLY).cheaper_model == "gpt-4o-mini"
    assert settings.feature(Feature.SUMMARY).cheaper_model is None
    assert ".log" in settings.attachments.text_extensions
    assert settings.attachments.max_download_bytes == 10 * 1024 * 1024
    assert settings.budgets.guild_daily_micros is None
    assert settings.prices_file.is_file()  # the shipped table, found from anywhere


def test_shipped_example_config_states_exactly_the_defaults():
    from_example = load_settings(REPO / "config" / "ibot.example.toml")

    assert from_example.model_dump() == load_settings().model_dump()


def test_toml_file_named_by_ibot_config(monkeypatch, tmp_path):
    path = write(
        tmp_path / "elsewhere" / "my.toml",
        """
        [discord]
        forum_channel_ids = [111, 222]
        [features.summary]
        max_prompt_tokens = 6000
        [prompts]
        language = "en"
        [budgets]
        guild_daily_usd = 0.1
        """,
    )
    monkeypatch.setenv("IBOT_CONFIG", str(path))

    settings = load_settings()

    assert settings.discord.forum_channel_ids == [111, 222]
    assert settings.prompts.language == "en"
    # A partial feature table keeps that feature's own defaults for the rest.
    assert settings.features.summary.max_prompt_tokens == 6000
    assert settings.features.summary.model == "gpt-4o-mini"
    assert settings.budgets.guild_daily_usd == Decimal("0.1")
    assert settings.budgets.guild_daily_micros == 100_000


def test_default_config_file_is_read_from_the_current_directory(tmp_path):
    write(tmp_path / "config" / "ibot.toml", '[prompts]\nbot_name = "Robert"\n')

    assert load_settings().prompts.bot_name == "Robert"


def test_legacy_environment_names_land_in_their_fields(monkeypatch):
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8999/v1")
    monkeypatch.setenv("FORUM_CHANNEL_IDS", "1, 2")
    monkeypatch.setenv("GPT_CHANNEL_ID", "3")

    settings = load_settings()

    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == TOKEN
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == KEY
    assert settings.openai_base_url == "http://127.0.0.1:8999/v1"
    assert settings.discord.forum_channel_ids == [1, 2]
    assert settings.discord.gpt_channel_ids == [3]
    assert set(settings.secret_values()) == {TOKEN, KEY}


def test_discord_token_is_also_read_from_discord_token(monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)

    token = load_settings().discord_token
    assert token is not None and token.get_secret_value() == TOKEN


def test_legacy_names_work_from_a_dotenv_file(tmp_path):
    write(tmp_path / ".env", f"BOT_TOKEN={TOKEN}\nFORUM_CHANNEL_IDS=5,6\nUNRELATED_TOOL=1\n")

    settings = load_settings()

    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == TOKEN
    assert settings.discord.forum_channel_ids == [5, 6]


def test_environment_beats_dotenv_beats_toml(monkeypatch, tmp_path):
    config = write(
        tmp_path / "c.toml",
        "[openai]\ntimeout_s = 10\nmax_retries = 1\n"
        "[discord]\nforum_channel_ids = [7]\ngpt_channel_ids = [8]\n"
        "[features.ask]\nmax_output_tokens = 900\n",
    )
    write(tmp_path / ".env", "IBOT_OPENAI__TIMEOUT_S=20\nIBOT_OPENAI__MAX_RETRIES=2\n")
    monkeypatch.setenv("IBOT_OPENAI__TIMEOUT_S", "30")
    monkeypatch.setenv("FORUM_CHANNEL_IDS", "9")
    monkeypatch.setenv("GPT_CHANNEL_ID", "10")

    settings = load_settings(config)

    assert settings.openai.timeout_s == 30
    assert settings.openai.max_retries == 2
    assert settings.features.ask.max_output_tokens == 900
    assert settings.discord.forum_channel_ids == [9]  # a list variable replaces the list
    assert settings.discord.gpt_channel_ids == [8, 10]  # the single legacy channel is added


def test_keyword_overrides_beat_the_environment(monkeypatch):
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("IBOT_DISCORD__ASK_COOLDOWN_S", "45")

    settings = load_settings(None, discord_token="override-token-value", discord={"guild_ids": [4]})

    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "override-token-value"
    assert settings.discord.guild_ids == [4]
    assert settings.discord.ask_cooldown_s == 45  # the section is merged, not replaced


def test_negative_token_count_in_toml_is_one_line_naming_the_key(tmp_path):
    config = write(tmp_path / "c.toml", "[features.ask]\nmax_output_tokens = -5\n")

    err = config_error(config_file=config)

    assert str(err) == (
        "config error: features.ask.max_output_tokens: Input should be greater than 0 (got -5)"
    )
    assert err.key == "features.ask.max_output_tokens"


def test_bad_forum_id_list_says_which_item_is_wrong(monkeypatch):
    monkeypatch.setenv("FORUM_CHANNEL_IDS", "12,abc")

    err = config_error()

    assert err.key == "discord.forum_channel_ids"
    assert "'abc'" in str(err)


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    config = write(tmp_path / "c.toml", '[features.ask]\nmodle = "x"\n')

    err = config_error(config_file=config)

    assert err.key == "features.ask.modle"
    assert "unknown setting" in str(err) and "features.ask.model" in str(err)


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    config = write(tmp_path / "c.toml", "[features.ask\nmodel = 1\n")

    err = config_error(config_file=config)

    assert err.key == str(config)
    assert "invalid TOML" in str(err) and "line 1" in str(err)


def test_missing_file_named_by_ibot_config_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("IBOT_CONFIG", str(tmp_path / "absent.toml"))

    err = config_error()

    assert "absent.toml" in err.key and "not found" in err.problem


def test_missing_file_given_explicitly_is_an_error(tmp_path):
    err = config_error(config_file=tmp_path / "absent.toml")

    assert "not found" in str(err)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OPENAI_BASE_URL": "ftp://example.com"}, "openai_base_url"),
        ({"IBOT_PROMPTS__LANGUAGE": "de"}, "prompts.language"),
        ({"IBOT_OPENAI__MAX_RETRIES": "11"}, "openai.max_retries"),
        ({"IBOT_BUDGETS__USER_DAILY_USD": "-1"}, "budgets.user_daily_usd"),
        ({"IBOT_LOGGING__LEVEL": "loud"}, "logging.level"),
        ({"IBOT_PRICES_FILE": "nowhere.toml"}, "prices_file"),
        ({"GPT_CHANNEL_ID": "general"}, "gpt_channel_id"),
        ({"IBOT_DISCORD__API_BASE_URL": "discord.com/api"}, "discord.api_base_url"),
        ({"IBOT_OPENAI__MAX_CONCURRENT_CALLS": "0"}, "openai.max_concurrent_calls"),
        ({"IBOT_DISCORD__SHUTDOWN_GRACE_S": "-1"}, "discord.shutdown_grace_s"),
    ],
)
def test_bad_values_from_the_environment_name_their_key(monkeypatch, env, key):
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert config_error().key == key


def test_several_problems_still_make_one_line(tmp_path):
    config = write(
        tmp_path / "c.toml", "[features.ask]\nmax_output_tokens = -5\n[discord]\ntypo = 1\n"
    )

    err = config_error(config_file=config)

    assert "and 1 more" in str(err)


def test_fail_on_config_error_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        fail_on_config_error(ConfigError("features.ask.model", "bad\nvalue"))

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err == "config error: features.ask.model: bad value\n"


def test_config_error_exits_2_without_traceback_in_a_real_process(tmp_path):
    write(tmp_path / "c.toml", "[features.ask]\nmax_output_tokens = -5\n")
    probe = (
        "from ibot.config import ConfigError, fail_on_config_error, load_settings\n"
        "try:\n    load_settings('c.toml')\n"
        "except ConfigError as err:\n    fail_on_config_error(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "features.ask.max_output_tokens" in lines[0]
    assert "Traceback" not in done.stderr


def test_secrets_never_appear_in_repr_str_or_json(monkeypatch):
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("IBOT_DATABASE_URL", "postgresql+asyncpg://ibot:db-password-42@db/ibot")

    settings = load_settings()

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert TOKEN not in text and KEY not in text
    assert "db-password-42" not in repr(settings) + str(settings)
    assert "db-password-42" in settings.secret_values()  # so the log redactor masks it


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"OPENAI_API_KEY": "sk-proj-half-pasted key-0123456789"}, "openai_api_key"),
        ({"BOT_TOKEN": "MTIz.secret\ttoken-value-xyz"}, "discord_token"),
        ({"IBOT_DATABASE_URL": "db-password-42@nowhere"}, "database_url"),
    ],
)
def test_invalid_secret_is_never_echoed_in_the_error(monkeypatch, env, key):
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    err = config_error()

    assert err.key == key
    for value in env.values():
        for fragment in value.split():
            assert fragment not in str(err)


def test_secret_under_a_misspelled_key_is_not_echoed(tmp_path):
    config = write(tmp_path / "c.toml", f'[discord]\ntoken = "{TOKEN}"\n')

    err = config_error(config_file=config)

    assert err.key == "discord.token" and TOKEN not in str(err)


def test_settings_class_alone_reads_the_same_sources(monkeypatch):
    monkeypatch.setenv("IBOT_PROMPTS__LANGUAGE", "EN")

    assert Settings().prompts.language == "en"


def test_shipped_env_example_loads_as_is(tmp_path):
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text(encoding="utf-8"))

    settings = load_settings()

    assert settings.discord_token is None and settings.discord.forum_channel_ids == []
