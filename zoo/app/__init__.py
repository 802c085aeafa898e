"""The shared shell of every command: config composition and checks, argument parsing, progress, the Trainer."""
