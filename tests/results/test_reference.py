"""results/reference/: the committed leaderboards are what `focalbench leaderboard` makes of the
committed CSVs, byte for byte (issue 17).

Each command runs in an empty working directory, so no run folder can be found: the "vs best"
marks and the config keys come from the freeze beside each CSV (results/frozen.py), as they do in
a fresh clone. The arguments are those of scripts/reference_study.sh's `report`.
"""

import shutil
from pathlib import Path

import pytest

from focalbench.cli import main

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
BOARDS = [
    ("demo_leaderboard.md", "demo_runs.csv", []),
    ("leaderboard.md", "study_runs.csv", []),
    ("leaderboard_by_laece0.md", "study_runs.csv", ["--sort", "laece0"]),
    ("leaderboard_detr.md", "study_detr_runs.csv", []),
    ("leaderboard_search.md", "study_search_runs.csv", []),
    ("leaderboard_poly1_ghmc.md", "study_poly1_ghmc_runs.csv", []),
    # the race (issue 22): the full grid and the runs the race used, with its race.csv beside them
    ("race/leaderboard_grid.md", "race/grid_runs.csv", []),
    ("race/leaderboard_race.md", "race/race_runs.csv", []),
    # the real-image study (issue 23): BCCD, experiment=finetune
    ("bccd/leaderboard.md", "bccd/runs.csv", []),
    ("bccd/leaderboard_by_laece0.md", "bccd/runs.csv", ["--sort", "laece0"]),
]


@pytest.mark.parametrize(("board", "csv_name", "extra"), BOARDS, ids=[b[0] for b in BOARDS])
def test_committed_leaderboard_is_reproduced(board, csv_name, extra, tmp_path, monkeypatch, capsys):
    for name in (csv_name, csv_name.replace(".csv", ".frozen.json")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REFERENCE / name, tmp_path / name)
    for race in (REFERENCE / Path(csv_name).parent).glob("sweeps/*/race.csv"):
        target = tmp_path / race.relative_to(REFERENCE)
        target.parent.mkdir(parents=True)
        shutil.copy(race, target)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["leaderboard", "--csv", csv_name, "--format", "md", *extra])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out == (REFERENCE / board).read_text()
    assert "n/a" not in out  # every mark came from the freeze, none is missing
