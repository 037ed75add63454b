"""Reading results back: one file -> tidy records (`records`), many files -> one table (`gather`),
tables and leaderboards (`tables`), figures (`plots`), and collect-results itself (`collect`)."""
