"""What sets runs apart, as Compare labels their series."""

from __future__ import annotations

from commonpool.differences import series_labels, what_differs


def test_counts_get_separators_and_a_run_without_config_does_not_break_the_labels() -> None:
    configs = {
        "big": {"num_participants": 1000, "min_exchanges": 20000, "max_exchanges": 20000, "seed": 1},
        "damaged": {},  # a damaged run's record has no config
    }
    differs = what_differs(configs)
    assert differs["participants"] == {"big": "1,000 participants", "damaged": "? participants"}
    assert differs["exchanges"]["big"] == "20,000 exchanges"
    labels = series_labels(configs)
    assert labels["big"].startswith("1,000 participants") and len(set(labels.values())) == 2
