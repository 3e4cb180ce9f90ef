"""Results for people: reports, plots, the leaderboard and its pages. Layer 5 (beside sweep)."""
