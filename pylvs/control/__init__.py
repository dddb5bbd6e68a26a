"""pylvs.control"""
