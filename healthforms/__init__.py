"""healthforms: a HIPAA-minded forms platform for clinics."""
