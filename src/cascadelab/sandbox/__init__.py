"""The code sandbox: runs untrusted, model-written Python in a locked-down subprocess (a security boundary).

It imports nothing from the rest of the library; callers use the names below.
"""

from cascadelab.sandbox.runner import Isolation, Limits, Sandbox, Status, TestCase, Verdict, find_leftovers

__all__ = ["Isolation", "Limits", "Sandbox", "Status", "TestCase", "Verdict", "find_leftovers"]
