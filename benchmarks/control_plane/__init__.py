"""The control plane at scale: how leadio's bookkeeping grows with the dataset (issue 25, part 2).

``python -m benchmarks.control_plane --frames 1000,10000,100000 --out benchmarks/results --lock /tmp/bench.lock``
fabricates LEAD-layout roots of those sizes (`fabricate`: tiny sensor files, real metas and boxes, routes of
~100 frames), and on each runs, every step in a fresh process (`steps`): the catalog scan, the bucket build, the
shard build, the shard-set open (which plans epoch 0), a fresh epoch's plan, ``state_dict`` /
``load_state_dict``, ``leadio report``, and the reference's two bucket builds reproduced (`reference`). Each
step reports its seconds and the peak RSS of its process while it ran. `fit` gives the log-log growth exponent
of each step and projects it to 1 M frames (10,000 routes); `bench` writes ``control_plane.json`` and
``control_plane.md`` with the targets of the issue and the first step to exceed its budget.

The package imports nothing itself, so that a step's process (``python -m benchmarks.control_plane.steps``)
imports only what its step needs.
"""
