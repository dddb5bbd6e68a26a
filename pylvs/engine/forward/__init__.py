"""pylvs.engine.forward"""
