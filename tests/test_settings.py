"""Settings: YAML, environment and defaults; config.example.yaml documents every one."""

from pathlib import Path

import pytest
import yaml

from mailprobe.errors import ConfigError
from mailprobe.settings import AppSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"


def _leaf_paths(model: type, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            paths |= _leaf_paths(annotation, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def test_config_example_loads_to_the_built_in_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_settings(EXAMPLE)
    default = AppSettings()
    dumped = example.model_dump(exclude={"engine": {"helo_hostname"}})
    assert dumped == default.model_dump(exclude={"engine": {"helo_hostname"}})


def test_config_example_names_every_setting() -> None:
    text = EXAMPLE.read_text()
    leaves = _leaf_paths(AppSettings) - {"connectors"}
    missing = [p for p in leaves if f"{p.rsplit('.', 1)[-1]}:" not in text]
    assert not missing


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"engine": {"smtp": {"port": 2526, "max_rcpt_per_session": 5}}})
    )
    monkeypatch.setenv("MAILPROBE_ENGINE__SMTP__PORT", "2525")
    settings = load_settings(config)
    assert settings.engine.smtp.port == 2525
    assert settings.engine.smtp.max_rcpt_per_session == 5


def test_environment_lists_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPROBE_ENGINE__SMTP__ALLOWED_PRIVATE_NETWORKS", '["127.0.0.0/8"]')
    settings = load_settings()
    assert [str(n) for n in settings.engine.smtp.allowed_private_networks] == ["127.0.0.0/8"]


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("engine:\n  smtpp:\n    port: 1\n")
    with pytest.raises(ConfigError, match=r"engine\.smtpp: unknown setting"):
        load_settings(config)


def test_bad_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPROBE_ENGINE__SMTP__PORT", "many")
    with pytest.raises(ConfigError, match=r"engine\.smtp\.port"):
        load_settings()


def test_bad_schedule_says_what_a_schedule_looks_like(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("connectors:\n  d:\n    type: csv\n    schedule: often\n")
    with pytest.raises(
        ConfigError, match=r"connectors\.d\.schedule: 'often' is neither an interval"
    ):
        load_settings(config)


def test_connector_without_type_says_which_types_exist(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("connectors:\n  d:\n    schedule: 1m\n")
    with pytest.raises(ConfigError, match="type: csv"):
        load_settings(config)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config)


def test_secrets_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("connectors:\n  hubspot:\n    type: hubspot\n")
    monkeypatch.setenv("MAILPROBE_CONNECTORS__HUBSPOT__ACCESS_TOKEN", "pat-na1-secret-value")
    settings = load_settings(config)
    assert "pat-na1-secret-value" not in repr(settings)
    assert settings.connectors["hubspot"].access_token.get_secret_value() == "pat-na1-secret-value"


def test_init_template_is_config_example() -> None:
    """`mailprobe init` writes the packaged template; it must say what config.example.yaml says."""
    template = EXAMPLE.parent / "mailprobe" / "config_template.yaml"
    assert template.read_text() == EXAMPLE.read_text()
