"""Benchmark: our JAX corruptions vs the reference (imagecorruptions 1.1.2).

Run by hand (not part of the tests), on an otherwise idle machine, with
`$IC_PYTHON` the python of a venv with imagecorruptions 1.1.2 (numpy 1.26,
scikit-image 0.20, OpenCV 4.10):

  python benchmarks/corruptions_benchmark.py --ic_python=$IC_PYTHON \
      --out=benchmarks/corruptions_results.md

`--render_only` rewrites the markdown from the .json next to it (a test
checks that the committed file is what it writes).

In one run it measures, on the same natural images (random crops of the
photographs shipped with scikit-image, resized to 32 px and 224 px):

* throughput (images/s) of every corruption, ours jitted (batch 64 at 32 px
  with the CIFAR table, batch 8 at 224 px with the ImageNet table; compile
  time reported separately) vs `imagecorruptions.corrupt` per image in a
  subprocess of the `--ic_python` environment, plus all 15 benchmark
  corruptions together;
* which imagecorruptions corruptions crash on that stack, and how;
* agreement with the reference: mean |corrupt - clean| per severity for ours,
  imagecorruptions (ImageNet constants) and a re-implementation of the
  reference scripts' algorithms with the reference libraries
  (`corruptions_reference.py`, also for the CIFAR table), and PSNR between
  ours and the reference for the deterministic corruptions.

The load average is recorded before and after; results on a busy machine are
flagged in the output.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import harness  # pylint: disable=g-bad-import-order  (benchmarks/)

sys.path.insert(0, harness.REPO)
from robustjax.robustness import corruptions  # pylint: disable=g-import-not-at-top,wrong-import-position
from robustjax.robustness.corruptions import tables  # pylint: disable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg',
          'motorcycle_left.png', 'ihc.png')


def load_photos(ic_python):
  """The RGB photographs shipped with scikit-image (in the ic environment)."""
  out = subprocess.run(
      [ic_python, '-c', 'import os, skimage; '
       'print(os.path.join(os.path.dirname(skimage.__file__), "data"))'],
      capture_output=True, text=True, check=True).stdout.strip()
  photos = []
  for name in PHOTOS:
    path = os.path.join(out, name)
    if os.path.exists(path):
      photos.append(np.asarray(Image.open(path).convert('RGB')))
  if not photos:
    raise FileNotFoundError(f'no photographs in {out}')
  return photos


def make_images(photos, n, size, seed):
  """n random square crops (side 2-8x `size`, capped), resized to `size`."""
  rng = np.random.default_rng(seed)
  out = np.zeros((n, size, size, 3), np.uint8)
  for i in range(n):
    p = photos[rng.integers(len(photos))]
    side = int(min(min(p.shape[:2]), rng.uniform(2, 8) * size,
                   max(size, 0.9 * min(p.shape[:2]))))
    r = rng.integers(0, p.shape[0] - side + 1)
    c = rng.integers(0, p.shape[1] - side + 1)
    crop = Image.fromarray(p[r:r + side, c:c + side])
    out[i] = np.asarray(crop.resize((size, size), Image.BOX))
  return out


def _block(tree):
  return jax.tree_util.tree_map(lambda a: a.block_until_ready(), tree)


def time_ours(fn, x, key, min_s=1.0, min_reps=3):
  """(compile seconds, median seconds per call) of a jitted fn(x, key)."""
  t0 = time.perf_counter()
  _block(fn(x, key))
  compile_s = time.perf_counter() - t0
  times = []
  start = time.perf_counter()
  while len(times) < min_reps or time.perf_counter() - start < min_s:
    t = time.perf_counter()
    _block(fn(x, jax.random.fold_in(key, len(times))))
    times.append(time.perf_counter() - t)
  return compile_s, float(np.median(times))


def run_ic(ic_python, task, images, **kw):
  """Runs corruptions_reference.py in the ic venv; returns its output."""
  with tempfile.TemporaryDirectory() as d:
    inp = os.path.join(d, 'in.npz')
    np.savez(inp, images=images)
    out = os.path.join(d, 'out.json' if task != 'outputs' else 'out.npz')
    args = [ic_python, os.path.join(HERE, 'corruptions_reference.py'),
            '--task', task, '--images', inp, '--out', out]
    for k, v in kw.items():
      if k == 'params':
        pfile = os.path.join(d, 'params.json')
        with open(pfile, 'w') as f:
          json.dump(v, f)
        v = pfile
      args += [f'--{k}', str(v)]
    subprocess.run(args, check=True)
    if task == 'outputs':
      with np.load(out) as z:
        return {k: z[k] for k in z.files}
    with open(out) as f:
      return json.load(f)


def ours_all_severities(name, table, images_u8):
  c = corruptions.get_corruption(name, table)
  fn = jax.jit(lambda x, k: jax.vmap(lambda s: c.apply(x, s, k))(
      jnp.arange(1, 6)))
  x = jnp.asarray(images_u8, jnp.float32) / 255
  y = np.asarray(fn(x, jax.random.key(123)))
  return np.uint8(np.clip(y * 255 + 1e-3, 0, 255))  # truncate like np.uint8


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def agreement(ic_python, images, table, kinds, names):
  """Mean |corrupt - clean| per severity and PSNR vs the reference."""
  params = {n: tables.PARAMS[table][n] for n in names}
  ref = run_ic(ic_python, 'outputs', images, params=params, table=table,
               kinds=','.join(kinds), names=','.join(names))
  rows = {}
  for name in names:
    ours = ours_all_severities(name, table, images)
    row = {'n': len(images),
           'ours': [float(np.abs(ours[s].astype(float) - images).mean() / 255)
                    for s in range(5)]}
    for kind in kinds:
      r = ref[f'{kind}/{name}']
      row[kind] = [float(np.abs(r[s].astype(float) - images).mean() / 255)
                   for s in range(5)]
      if name in corruptions.DETERMINISTIC:
        row[f'psnr_{kind}'] = [psnr(ours[s], r[s]) for s in range(5)]
    rows[name] = row
  return rows


def _fmt_list(v, fmt='{:.3f}'):
  return ' / '.join(fmt.format(x) for x in v)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--ic_python', default=os.environ.get('IC_PYTHON', ''),
                 help='python of the imagecorruptions venv (default: '
                 '$IC_PYTHON)')
  p.add_argument('--batch32', type=int, default=64)
  p.add_argument('--batch224', type=int, default=8)
  p.add_argument('--severity', type=int, default=3)
  p.add_argument('--ic_budget_s', type=float, default=15.0,
                 help='max seconds per imagecorruptions timing')
  p.add_argument('--agree32', type=int, default=64)
  p.add_argument('--agree224', type=int, default=16)
  p.add_argument('--agree224_glass', type=int, default=3,
                 help='glass_blur takes ~5 s per 224 px image in the reference')
  p.add_argument('--max_load', type=float, default=0.5,
                 help='wait until the 1-min load average is below this')
  p.add_argument('--wait_idle_s', type=float, default=3600,
                 help='give up waiting after this many seconds (then run)')
  p.add_argument('--sizes', default='32,224',
                 help='which throughput measurements to run')
  p.add_argument('--skip_agreement', action='store_true')
  p.add_argument('--render_only', action='store_true',
                 help='rewrite --out from the .json next to it')
  p.add_argument('--out', default=os.path.join(HERE,
                                               'corruptions_results.md'))
  a = p.parse_args()
  if a.render_only:
    with open(os.path.splitext(a.out)[0] + '.json') as f:
      write_markdown(json.load(f), a.out)
    return
  if not a.ic_python:
    p.error('--ic_python (or $IC_PYTHON) is needed to run the reference')

  photos = load_photos(a.ic_python)
  harness.wait_for_idle(a.max_load, a.wait_idle_s)
  load_before = os.getloadavg()
  print(f'load average before: {load_before}', flush=True)
  res = {'load_before': load_before, 'severity': a.severity,
         'date': time.strftime('%Y-%m-%d %H:%M'),
         'cpu': harness.cpu_name(), 'argv': harness.public_command(sys.argv),
         'ncpu': os.cpu_count(), 'jax': jax.__version__,
         'device': str(jax.devices()[0]), 'throughput': {}}
  key = jax.random.key(0)
  names = corruptions.ALL

  sizes = [int(v) for v in a.sizes.split(',')]
  for size, batch, table in ((32, a.batch32, 'cifar'),
                             (224, a.batch224, 'imagenet')):
    if size not in sizes:
      continue
    images = make_images(photos, batch, size, seed=size)
    x = jnp.asarray(images, jnp.float32) / 255
    rows = {}
    for name in names:
      c = corruptions.get_corruption(name, table)
      fn = jax.jit(lambda x, k, c=c: c.apply(x, a.severity, k))
      comp, t = time_ours(fn, x, key)
      rows[name] = {'ours_compile_s': comp, 'ours_img_s': batch / t}
      print(f'{size}px ours {name:18s} {batch / t:10.0f} img/s '
            f'(compile {comp:.1f} s)', flush=True)
    bench = [corruptions.get_corruption(n, table)
             for n in corruptions.BENCHMARK]
    fused = jax.jit(lambda x, k: [c.apply(x, a.severity, k) for c in bench])
    comp, t = time_ours(fused, x, key)
    all15 = {'ours_compile_s': comp, 'ours_img_s': batch / t}
    print(f'{size}px ours all 15 fused {batch / t:.0f} img/s', flush=True)
    theirs = run_ic(a.ic_python, 'timing', images, names=','.join(names),
                    severity=a.severity, budget_s=a.ic_budget_s)
    for name in names:
      rows[name]['ic_img_s'] = 1.0 / theirs[name]
    all15['ic_img_s'] = 1.0 / sum(theirs[n] for n in corruptions.BENCHMARK)
    all15['ours_sum_img_s'] = 1.0 / sum(1.0 / rows[n]['ours_img_s']
                                        for n in corruptions.BENCHMARK)
    res['throughput'][size] = {'table': table, 'batch': batch, 'rows': rows,
                               'all15': all15}
  res['crashes'] = run_ic(a.ic_python, 'crashes', make_images(photos, 1, 32,
                                                              0))
  res['load_after_timing'] = os.getloadavg()

  if not a.skip_agreement:
    no_glass = [n for n in names if n != 'glass_blur']
    big = agreement(a.ic_python, make_images(photos, a.agree224, 224, seed=7),
                    'imagenet', ('ic', 'oracle'), no_glass)
    big.update(agreement(
        a.ic_python, make_images(photos, a.agree224_glass, 224, seed=7),
        'imagenet', ('ic', 'oracle'), ['glass_blur']))
    res['agree'] = {
        'imagenet_224': {n: big[n] for n in names},
        'cifar_32': agreement(a.ic_python, make_images(
            photos, a.agree32, 32, seed=8), 'cifar', ('oracle',), names),
    }
  res['load_after'] = os.getloadavg()
  with open(os.path.splitext(a.out)[0] + '.json', 'w') as f:
    json.dump(res, f, indent=1)
  write_markdown(res, a.out)
  print(f'wrote {a.out}')


def all15_ratio(res, size) -> float:
  """Ours / imagecorruptions, all 15 benchmark corruptions in one program."""
  s = {str(k): v for k, v in res['throughput'].items()}[str(size)]['all15']
  return s['ours_img_s'] / s['ic_img_s']


def _summary(res):
  """The current summary: what is measured, the figures, the machine."""
  lines = ['## Current summary', '']
  t = {str(k): v for k, v in res['throughput'].items()}  # JSON: str keys.
  if '32' in t and '224' in t:
    s32, s224 = t['32']['all15'], t['224']['all15']
    per = [r['ours_img_s'] / r['ic_img_s'] for r in t['32']['rows'].values()]
    lines += [
        f'All 15 benchmark corruptions as one jitted program, severity '
        f'{res["severity"]}, per image: **{all15_ratio(res, 32):,.0f}x** '
        f'imagecorruptions 1.1.2 at 32 px ({s32["ours_img_s"]:,.0f} vs '
        f'{s32["ic_img_s"]:,.2f} img/s; batch {t["32"]["batch"]}, CIFAR '
        f'table) and **{all15_ratio(res, 224):,.0f}x** at 224 px '
        f'({s224["ours_img_s"]:,.0f} vs {s224["ic_img_s"]:,.2f} img/s; batch '
        f'{t["224"]["batch"]}, ImageNet table). Corruption by corruption at '
        f'32 px: median {statistics.median(per):,.1f}x, range '
        f'{min(per):,.1f}x-{max(per):,.0f}x. Machine: {res["ncpu"]}-core '
        f'{res["cpu"]}, CPU only, JAX {res["jax"]}. One run, every number '
        'in `corruptions_results.json`; the agreement with the reference '
        'algorithms is discussed in docs/corruptions.md.', '']
  return lines


def write_markdown(res, path):
  """Results tables (the .json next to it has every number)."""
  busy = res['load_before'][0]
  date = f' ({res["date"]})' if 'date' in res else ''
  lines = [
      '# Corruption benchmark results',
      '',
      'Generated by `benchmarks/corruptions_benchmark.py` from',
      '`corruptions_results.json` (`--render_only` rewrites it).',
      '',
  ] + _summary(res) + [
      f'## The run{date}',
      '',
      '```',
      'python ' + harness.public_command(res.get(
          'argv', 'benchmarks/corruptions_benchmark.py').split()),
      '```',
      '',
      f'* Machine: {res["ncpu"]}-core {res["cpu"]}, CPU only; JAX '
      f'{res["jax"]} on {res["device"]} (uses both cores); imagecorruptions '
      '1.1.2 on numpy 1.26.4 / scikit-image 0.20.0 / OpenCV 4.10.0.84, one '
      'image at a time in one process.',
      f'* Load average (1/5/15 min) before: '
      f'{_fmt_list(res["load_before"], "{:.2f}")}; after timing: '
      f'{_fmt_list(res["load_after_timing"], "{:.2f}")} (includes this '
      'benchmark\'s own 2-3 threads)'
      + (' -- **machine busy before the run, timings unreliable**'
         if busy > 0.5 else ''),
      f'* Severity {res["severity"]}; images: random crops of the scikit-image '
      'photographs, resized to 32 and 224 px. Ours: CIFAR table at 32 px, '
      'ImageNet table at 224 px; imagecorruptions always uses the ImageNet '
      'constants. Throughput excludes compilation (reported separately).',
      '',
  ]
  for size, t in res['throughput'].items():
    lines += [f'### Throughput at {size} px (ours: batch {t["batch"]}, '
              f'{t["table"]} table)', '',
              '| corruption | ours img/s | imagecorruptions img/s | ratio | '
              'our compile s |', '|---|---:|---:|---:|---:|']
    for name, r in t['rows'].items():
      lines.append(f'| {name} | {r["ours_img_s"]:,.0f} | {r["ic_img_s"]:,.1f}'
                   f' | {r["ours_img_s"] / r["ic_img_s"]:,.1f}x | '
                   f'{r["ours_compile_s"]:.1f} |')
    s = t['all15']
    lines += [
        f'| **all 15 benchmark, one jitted program** | {s["ours_img_s"]:,.0f}'
        f' | {s["ic_img_s"]:,.2f} | **{s["ours_img_s"] / s["ic_img_s"]:,.0f}x**'
        f' | {s["ours_compile_s"]:.1f} |',
        f'| all 15 benchmark, sum of separate calls | '
        f'{s["ours_sum_img_s"]:,.0f} | {s["ic_img_s"]:,.2f} | '
        f'{s["ours_sum_img_s"] / s["ic_img_s"]:,.0f}x | |', '']
  lines += ['### imagecorruptions crashes on this stack (unmodified call)', '']
  if res['crashes']:
    for name, err in res['crashes'].items():
      lines.append(f'* `{name}`: `{err}`')
  else:
    lines.append('* none')
  lines += ['', '(Timed above with `skimage.filters.gaussian` wrapped to map '
            '`multichannel=True` to `channel_axis=-1`.)', '']
  for tag, rows in res.get('agree', {}).items():
    lines += [f'### Agreement, {tag.replace("_", " table, ")} px: mean '
              '|corrupt - clean| for severities 1 / 2 / 3 / 4 / 5', '']
    kinds = [k for k in ('ic', 'oracle') if k in next(iter(rows.values()))]
    head = '| corruption | images | ours | ' + ' | '.join(
        {'ic': 'imagecorruptions', 'oracle': 'reference algorithm'}[k]
        for k in kinds) + ' | PSNR ours vs ref (dB) |'
    lines += [head, '|---' * (4 + len(kinds)) + '|']
    for name, r in rows.items():
      ps = r.get('psnr_oracle')
      cells = [name, str(r['n']), _fmt_list(r['ours'])]
      cells += [_fmt_list(r[k]) for k in kinds]
      cells.append(_fmt_list(ps, '{:.1f}') if ps else '')
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


if __name__ == '__main__':
  main()
