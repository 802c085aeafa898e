"""Training populations of models into a zoo: recipes, trajectories, the population trainer, builds."""
