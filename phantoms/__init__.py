"""Digital patients (phantoms) for art: anatomy, daily variation, CBCT simulation, ground truth."""
