"""pylvs.engine"""
