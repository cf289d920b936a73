"""Tests of the Windows collector and the Windows fixture images."""
