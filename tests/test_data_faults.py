"""Stale and bad data in flownb's loaders (issue 21): a stale unpack cache, IDX files whose counts disagree, a damaged
deflate stream, and tabular files with a NaN, an inf or a constant column. Every case builds its own small files in a
temporary folder and points FLOWNB_CACHE at one, so nothing here reads ../shared/data or ~/.cache."""
import errno, gzip, hashlib, json, os, shutil, struct
import numpy as np
import pytest
import torch

import flownb.data as data
from flownb.data import DataError, load_data, load_tabular, load_sklearn_tabular, load_torchvision_images

MNIST_FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('FLOWNB_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def idx_bytes(array: np.ndarray, count: int | None = None) -> bytes:
    "An IDX file of unsigned bytes: magic 00 00 08 ndim, big-endian uint32 sizes (the first may be overridden), values"
    dims = list(array.shape)
    if count is not None: dims[0] = count
    return struct.pack(f'>4B{array.ndim}I', 0, 0, 8, array.ndim, *dims) + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=6, seed=0, gz=True, **override):
    "A tiny MNIST in `folder`; `override` maps a file stem to the bytes to write instead"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (('train', n_train), ('t10k', n_test)):
        arrays[f'{split}-images-idx3-ubyte'] = rng.integers(0, 256, (n, 28, 28))
        arrays[f'{split}-labels-idx1-ubyte'] = rng.integers(0, 10, (n,))
    for stem in MNIST_FILES:
        raw = override.get(stem, idx_bytes(arrays[stem]))
        if gz: (folder / f'{stem}.gz').write_bytes(gzip.compress(raw))
        else: (folder / stem).write_bytes(raw)
    return arrays


def set_mtime(path, seconds_ago):
    t = os.stat(path).st_mtime - seconds_ago
    os.utime(path, (t, t))


# ---------------------------------------------------------------- 1. the unpack cache follows content, not mtimes
@pytest.mark.parametrize('gz', [True, False], ids=['gzipped', 'plain'])
def test_cache_is_not_stale_when_new_files_carry_an_older_mtime(tmp_path, own_cache, gz):
    "`cp -p` / tar: new files with the same size and an mtime older than the cache must still be loaded"
    folder = tmp_path / 'mnist'
    write_mnist(folder, seed=0, gz=gz)
    old = load_torchvision_images('mnist', folder)
    new = write_mnist(folder, seed=1, gz=gz)                       # same shapes, so uncompressed sizes are equal
    for f in folder.iterdir(): set_mtime(f, 30 * 86400)             # a month older than the cache
    got = load_torchvision_images('mnist', folder)
    fresh = torch.from_numpy(new['train-images-idx3-ubyte'].astype(np.uint8))
    assert not torch.equal(old.train[:, 0], fresh), 'fixture: the two releases must differ'
    assert torch.equal(got.train[:, 0], fresh), 'stale cache: the previous files were returned'
    assert torch.equal(got.test_labels, torch.from_numpy(new['t10k-labels-idx1-ubyte']).long())
    source = folder / ('train-images-idx3-ubyte' + ('.gz' if gz else ''))
    record = json.loads(next(own_cache.glob('unpacked/mnist-*/MNIST/raw/train-images-idx3-ubyte.source')).read_text())
    assert record['size'] == source.stat().st_size and record['sha256'] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_cache_without_its_record_is_unpacked_again(tmp_path):
    "A cache from an older flownb, or a process stopped between moving the file in and writing its record"
    folder = tmp_path / 'mnist'
    arrays = write_mnist(folder)
    root, _ = data._torchvision_root('mnist', folder, download=False)
    target = root / 'MNIST' / 'raw' / 'train-images-idx3-ubyte'
    for record in target.parent.glob('*.source'): record.unlink()
    target.write_bytes(idx_bytes(np.zeros((20, 28, 28))))          # stale content, newer mtime than the source
    got = load_torchvision_images('mnist', folder)
    assert torch.equal(got.train[:, 0], torch.from_numpy(arrays['train-images-idx3-ubyte'].astype(np.uint8)))


def test_unchanged_files_are_not_unpacked_twice(tmp_path, monkeypatch):
    "The cache still works: a second load of the same files reads only the sidecars (no gunzip)"
    folder = tmp_path / 'mnist'
    write_mnist(folder)
    root, _ = data._torchvision_root('mnist', folder, download=False)
    calls = []
    real = shutil.copyfileobj
    monkeypatch.setattr(shutil, 'copyfileobj', lambda *a, **k: (calls.append(1), real(*a, **k)))
    data._torchvision_root('mnist', folder, download=False)
    assert calls == []
    assert not list((root / 'MNIST' / 'raw').glob('*.tmp'))


# ---------------------------------------------------------------- 2. IDX counts
@pytest.mark.parametrize('gz', [True, False], ids=['gzipped', 'torchvision-layout'])
def test_images_and_labels_must_agree_in_count(tmp_path, gz):
    "200 images with 150 labels loaded silently; now a DataError naming both files and both counts"
    rng = np.random.default_rng(0)
    folder = tmp_path / 'mnist' if gz else tmp_path / 'root' / 'MNIST' / 'raw'
    write_mnist(folder, gz=gz, **{'train-images-idx3-ubyte': idx_bytes(rng.integers(0, 256, (200, 28, 28))),
                                  'train-labels-idx1-ubyte': idx_bytes(rng.integers(0, 10, (150,)))})
    with pytest.raises(DataError) as e: load_data('mnist', folder if gz else tmp_path / 'root')
    msg = str(e.value)
    assert 'holds 200 images' in msg and 'holds 150 labels' in msg, msg
    assert 'train-images-idx3-ubyte' in msg and 'train-labels-idx1-ubyte' in msg, msg
    if gz: assert str(folder / 'train-images-idx3-ubyte.gz') in msg, 'the message names the source, not only the cache'


@pytest.mark.parametrize('stem, array, count, says', [
    ('train-images-idx3-ubyte', np.zeros((150, 28, 28)), 200, 'announces 200 items of 28 × 28'),   # truncated
    ('t10k-labels-idx1-ubyte', np.zeros((9,)), 6, 'announces 6 items'),                            # extra bytes
], ids=['header-says-more', 'header-says-fewer'])
def test_idx_header_must_match_file_size(tmp_path, stem, array, count, says):
    folder = tmp_path / 'mnist'
    write_mnist(folder, **{stem: idx_bytes(array, count)})
    with pytest.raises(DataError) as e: load_data('mnist', folder)
    msg = str(e.value)
    assert 'corrupt' in msg and says in msg and f'{stem}.gz' in msg, msg
    assert f'({len(array):g} items)' in msg, msg


# ---------------------------------------------------------------- 3. damaged gzip streams
def _damaged_deflate() -> bytes:
    "A deflate stream whose first block has the reserved type 3: gzip raises zlib.error, not an OSError"
    packed = bytearray(gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (20, 28, 28)))))
    assert packed[3] == 0, 'fixture: no optional gzip header fields, so the deflate stream starts at byte 10'
    packed[10] = 0b111                                              # BFINAL = 1, BTYPE = 11 (reserved)
    return bytes(packed)

def _bad_crc() -> bytes:
    packed = bytearray(gzip.compress(idx_bytes(np.zeros((20, 28, 28)))))
    packed[-8] ^= 0xFF                                              # the CRC32 in the trailer
    return bytes(packed)


@pytest.mark.parametrize('damage', [_damaged_deflate, _bad_crc], ids=['corrupt-deflate-stream', 'bad-crc'])
def test_damaged_gzip_is_a_data_error_and_leaves_no_temporary_file(tmp_path, own_cache, damage):
    folder = tmp_path / 'mnist'
    write_mnist(folder)
    (folder / 'train-images-idx3-ubyte.gz').write_bytes(damage())
    with pytest.raises(DataError, match='is corrupt or truncated') as e: load_data('mnist', folder)
    assert str(folder / 'train-images-idx3-ubyte.gz') in str(e.value)
    assert list(own_cache.rglob('*.tmp')) == []


def test_any_failure_while_unpacking_removes_the_temporary_file(tmp_path, own_cache, monkeypatch):
    "Not only the expected errors: an interrupt or a bug in the middle of unpacking must not leave *.tmp behind"
    folder = tmp_path / 'mnist'
    write_mnist(folder)
    def boom(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(shutil, 'copyfileobj', boom)
    with pytest.raises(KeyboardInterrupt): data._torchvision_root('mnist', folder, download=False)
    assert list(own_cache.rglob('*.tmp')) == []


def test_a_full_disk_is_not_called_a_corrupt_file(tmp_path, own_cache, monkeypatch):
    folder = tmp_path / 'mnist'
    write_mnist(folder)
    def full(*args, **kwargs): raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(shutil, 'copyfileobj', full)
    with pytest.raises(DataError) as e: data._torchvision_root('mnist', folder, download=False)
    assert 'could not unpack' in str(e.value) and 'No space left' in str(e.value) and 'corrupt' not in str(e.value)
    assert list(own_cache.rglob('*.tmp')) == []


# ---------------------------------------------------------------- 4. tabular values
def power_rows(n=60, seed=0):
    "POWER's layout: data.npy with 8 columns; 60 rows leave 48 / 6 / 6 after MAF's two 10% splits"
    return np.random.default_rng(seed).normal(size=(n, 8))

def save(root, rel, array):
    (root / rel).parent.mkdir(parents=True, exist_ok=True); np.save(root / rel, array)
    return root / rel


@pytest.mark.parametrize('value', [np.nan, np.inf, -np.inf], ids=['nan', 'inf', '-inf'])
def test_power_with_a_non_finite_value(tmp_path, value):
    rows = power_rows(); rows[17, 4] = value; rows[40, 6] = value
    path = save(tmp_path, 'power/data.npy', rows)
    with pytest.raises(DataError) as e: load_tabular('power', tmp_path)
    msg = str(e.value)
    assert str(path) in msg and '2 non-finite value(s)' in msg and f'the first is {value} at row 17, column 4' in msg, msg


def test_power_ignores_the_columns_maf_drops(tmp_path):
    "A guard on the check's scope: columns 1 and 3 are dropped by MAF's recipe, so what is in them does not matter"
    rows = power_rows(); rows[:, 1] = np.nan; rows[:, 3] = 5.0
    save(tmp_path, 'power/data.npy', rows)
    got = load_tabular('power', tmp_path)
    assert got.shape == (6,) and torch.isfinite(got.train).all()


def test_power_with_a_constant_column(tmp_path):
    "A constant column: its std is 0, standardising gives inf/NaN (POWER's last column gets no noise, so it stays 0)"
    rows = power_rows(); rows[:, 7] = 3.25
    path = save(tmp_path, 'power/data.npy', rows)
    with pytest.raises(DataError) as e: load_tabular('power', tmp_path)
    msg = str(e.value)
    assert str(path) in msg and 'constant column' in msg and 'column 7' in msg and '3.25 in all 60 rows' in msg, msg


@pytest.mark.parametrize('fault', ['nan', 'constant', 'constant-in-train-only'])
def test_miniboone(tmp_path, fault):
    rows = np.random.default_rng(0).normal(size=(100, 43)) * 5 + 3
    if fault == 'nan': rows[63, 12] = np.nan
    elif fault == 'constant': rows[:, 30] = -1.0
    else: rows[:90, 30] = 2.0                     # varies only in the test rows: train + validation std is 0
    path = save(tmp_path, 'miniboone/data.npy', rows)
    with pytest.raises(DataError) as e: load_tabular('miniboone', tmp_path)
    msg = str(e.value)
    assert str(path) in msg, msg
    if fault == 'nan': assert '1 non-finite value(s) (NaN or inf) in 1 of its 100 rows; the first is nan at row 63, column 12' in msg, msg
    elif fault == 'constant': assert 'column 30 (counted from 0), equal to -1.0 in all 100 rows' in msg, msg
    else: assert 'column 30' in msg and 'constant over the 90 training and validation rows' in msg, msg


def write_hepmass(root, rows=200, seed=0):
    "HEPMASS's two CSVs: a label column, 27 features (f0..f5 discrete) and, in the test file, one extra column"
    pd = pytest.importorskip('pandas', reason='hepmass is read with pandas')
    rng = np.random.default_rng(seed)
    def frame(extra):
        cols = {'# label': np.r_[np.ones(rows // 2), np.zeros(rows - rows // 2)]}
        for j in range(27): cols[f'f{j}'] = rng.normal(size=rows) if j >= 6 else rng.integers(0, 3, rows).astype(float)
        if extra: cols['mass'] = np.full(rows, 1000.0)
        return pd.DataFrame(cols)
    (root / 'hepmass').mkdir(parents=True)
    return frame(False), frame(True)


@pytest.mark.parametrize('fault', ['nan-in-train', 'inf-in-test', 'constant-in-train', 'nan-in-background-row'])
def test_hepmass(tmp_path, fault):
    train, test = write_hepmass(tmp_path)
    if fault == 'nan-in-train': train.loc[7, 'f9'] = np.nan; train.loc[8, 'f10'] = np.nan
    elif fault == 'inf-in-test': test.loc[3, 'f20'] = np.inf
    elif fault == 'constant-in-train': train['f12'] = 0.5
    else: train.loc[150, 'f9'] = np.nan           # a background row (label 0): MAF drops it, so it is not checked
    train.to_csv(tmp_path / 'hepmass/1000_train.csv', index=False); test.to_csv(tmp_path / 'hepmass/1000_test.csv', index=False)
    if fault == 'nan-in-background-row':
        assert load_tabular('hepmass', tmp_path).shape == (21,); return
    with pytest.raises(DataError) as e: load_tabular('hepmass', tmp_path)
    msg = str(e.value)
    if fault == 'nan-in-train':
        assert str(tmp_path / 'hepmass/1000_train.csv') in msg and "2 non-finite value(s)" in msg, msg
        assert "the first is nan at line 9, column 'f9'" in msg, msg     # data row 7: line 9 after the header line
    elif fault == 'inf-in-test':
        assert str(tmp_path / 'hepmass/1000_test.csv') in msg and "the first is inf at line 5, column 'f20'" in msg, msg
    else:
        assert str(tmp_path / 'hepmass/1000_train.csv') in msg and "column 'f12', equal to 0.5 in all 100 signal rows" in msg, msg


def test_gas_and_bsds300_with_a_nan(tmp_path):
    pd = pytest.importorskip('pandas', reason='gas is a pandas pickle')
    h5py = pytest.importorskip('h5py', reason='bsds300 is an HDF5 file')
    rng = np.random.default_rng(0)
    gas = pd.DataFrame(rng.normal(size=(100, 6)), columns=[f'S{i}' for i in range(6)])
    for col in ['Meth', 'Eth', 'Time']: gas[col] = rng.normal(size=100)
    gas.loc[42, 'S3'] = np.nan
    (tmp_path / 'gas').mkdir(); gas.to_pickle(tmp_path / 'gas/ethylene_CO.pickle')
    with pytest.raises(DataError, match=r"the first is nan at row 42 \(counted from 0\), column 'S3'"): load_tabular('gas', tmp_path)
    (tmp_path / 'BSDS300').mkdir()
    with h5py.File(tmp_path / 'BSDS300/BSDS300.hdf5', 'w') as f:
        for k, n in [('train', 40), ('validation', 10), ('test', 20)]:
            a = rng.normal(size=(n, 63))
            if k == 'validation': a[4, 60] = np.nan
            f[k] = a
    with pytest.raises(DataError, match=r"BSDS300.hdf5\['validation'\] holds 1 non-finite value.*row 4, column 60"):
        load_tabular('bsds300', tmp_path)


@pytest.mark.parametrize('fault', ['nan', 'constant'])
def test_sklearn_tabular(monkeypatch, fault):
    import sklearn.datasets
    real = sklearn.datasets.load_wine
    def doctored():
        bunch = real(); bunch.data = bunch.data.copy()
        if fault == 'nan': bunch.data[5, 2] = np.nan
        else: bunch.data[:, 2] = 1.5
        return bunch
    monkeypatch.setattr(sklearn.datasets, 'load_wine', doctored)
    with pytest.raises(DataError) as e: load_sklearn_tabular('wine')
    msg = str(e.value)
    assert "scikit-learn's load_wine()" in msg and "column 2 ('ash')" in msg, msg
    assert ('the first is nan at row 5' in msg) if fault == 'nan' else ('equal to 1.5 in all 178 rows' in msg), msg
