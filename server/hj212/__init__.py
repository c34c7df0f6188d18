"""HJ 212-2017 uplink: frame codec, the data logger's client role and a platform simulator."""
