"""leadtrain: a thin Accelerate trainer on top of leadio."""
