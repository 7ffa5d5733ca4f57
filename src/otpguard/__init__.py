"""otpguard: self-hosted, secure one-time-passcode verification."""
