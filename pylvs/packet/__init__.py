"""pylvs.packet"""
