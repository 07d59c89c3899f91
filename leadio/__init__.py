"""leadio: fast, trustworthy loading of LEAD CARLA driving data."""
