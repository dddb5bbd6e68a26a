"""pylvs.io"""
