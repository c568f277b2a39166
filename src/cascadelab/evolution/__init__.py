"""Evolution: self-improvement from verified problems and fractal architecture search over SIGMA variants."""
