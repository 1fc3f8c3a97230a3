"""checkpoint.check_crcs: torch.load checks no CRC, so a bit flipped on disk or in a copy loaded
silently and eval and sample reported garbage. Every script that loads a checkpoint checks the
CRC-32 of each record first."""

import struct
import zipfile

import pytest
import torch

import checkpoint
import eval as eval_script
import export
import sample
import tiny
import train
from test_train import TINY, data  # noqa: F401  (data: the module's token shards fixture)


def flip_a_tensor_byte(path):
    """Flip one bit in the middle of the largest tensor record (ARCHIVE/data/N); returns its name."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if '/data/' in i.filename), key=lambda i: i.file_size)
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack('<HH', f.read(4))
        f.seek(info.header_offset + 30 + name_length + extra_length + info.file_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 0x04]))
    return info.filename


def test_a_flipped_byte_in_a_tensor_is_one_line_naming_the_record(tmp_path):
    path, _ = tiny.checkpoint(tmp_path / 'ckpt.pt')
    checkpoint.check_crcs(path)
    before = checkpoint.read_checkpoint(path)['model']
    record = flip_a_tensor_byte(path)
    after = torch.load(path, weights_only=True)['model']  # what torch.load alone does: no error
    assert any(not torch.equal(before[k], after[k]) for k in before)
    message = f'damaged checkpoint {path} (CRC mismatch in {record}): '
    for load in (checkpoint.check_crcs, checkpoint.read_checkpoint, checkpoint.load_pretrained):
        with pytest.raises(ValueError) as error:
            load(path)
        assert str(error.value).startswith(message) and '\n' not in str(error.value)


def test_records_stored_without_a_crc_are_skipped(tmp_path):
    torch.serialization.set_crc32_options(False)  # torch then writes CRC 0 for every record
    try:
        path, _ = tiny.checkpoint(tmp_path / 'ckpt.pt')
    finally:
        torch.serialization.set_crc32_options(True)
    assert all(i.CRC == 0 for i in zipfile.ZipFile(path).infolist())
    flip_a_tensor_byte(path)
    checkpoint.check_crcs(path)  # nothing to check against: no error


def test_a_damaged_pytorch_model_bin_of_a_hugging_face_folder(tmp_path):
    torch.save({'w': torch.arange(1000.0)}, tmp_path / 'pytorch_model.bin')
    assert torch.equal(checkpoint.read_hf_weights(tmp_path)['w'], torch.arange(1000.0))
    record = flip_a_tensor_byte(tmp_path / 'pytorch_model.bin')
    with pytest.raises(ValueError, match=rf'^damaged checkpoint .*pytorch_model.bin \(CRC mismatch in {record}\)'):
        checkpoint.read_hf_weights(tmp_path)


def test_every_script_refuses_a_damaged_checkpoint_in_one_line(tmp_path, data, capsys):  # noqa: F811
    out = tmp_path / 'out'
    train.main(TINY + [f'--data={data}', f'--out_dir={out}', '--max_iters=2'])
    ckpt = out / 'ckpt.pt'
    record = flip_a_tensor_byte(ckpt)
    message = f'damaged checkpoint {ckpt} (CRC mismatch in {record}): '
    with pytest.raises(SystemExit) as exit_info:  # resume
        train.main(TINY + [f'--data={data}', f'--out_dir={out}', '--init_from=resume', '--max_iters=3'])
    assert str(exit_info.value.code).startswith(f'train.py: error: {message}')
    with pytest.raises(SystemExit) as exit_info:  # continued pretraining
        train.main(TINY + [f'--data={data}', f'--out_dir={tmp_path / "next"}', f'--init_from={ckpt}'])
    assert str(exit_info.value.code).startswith(f'train.py: error: {message}')
    capsys.readouterr()
    for main, argv in ((sample.main, ['--device=cpu', '--max_new_tokens=2']),
                       (eval_script.main, ['--device=cpu', f'--data={data}']),
                       (export.main, [f'--out={tmp_path / "hf"}'])):
        with pytest.raises(SystemExit) as exit_info:
            main([f'--ckpt={ckpt}', *argv])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 1 and len(err.splitlines()) == 1 and message in err, (main, err)
