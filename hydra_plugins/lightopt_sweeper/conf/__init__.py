# Config files of the lightopt sweeper, found by Hydra through pkg://hydra_plugins.lightopt_sweeper.conf
