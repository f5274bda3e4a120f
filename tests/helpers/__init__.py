"""Helpers shared by the test-suite, one module a concern:

blocking   waiting on state: wait_until, wait_blocked (a thread or process
           asleep in a blocking call), proc_state, pid_gone
children   ThreadTask, fork children that report (Child, ChildSet), Remote
           (a child driven through a pipe), raw fork holders, SharedInts
resources  fds, mappings, /dev/shm, TCP peers, sessions (the leak check)
scripts    Python scripts in a subprocess: Ctrl+C and GIL checks
impls      the implementations and start methods under test (ProcImpl)
targets    module-level process targets that report through JSON files
queues     what test_queue.py and test_queue_cproc.py share (fixture `new`)

Import from the module (`from helpers.children import ChildSet`): a spawn
child unpickles a target by that module's name.
"""
