"""Our gthread worker: a quick shutdown that lands while a connection is being handed to a
thread still exits (gunicorn's own waits forever there on the thread pool's lock)."""

import logging
import signal
import threading

from gunicorn.config import Config

from app.gunicorn_worker import ThreadWorker


def test_a_quick_shutdown_inside_submit_exits_the_worker():
    worker = ThreadWorker(
        age=1,
        ppid=0,
        sockets=[],
        app=None,
        timeout=30,
        cfg=Config(),
        log=logging.getLogger("test-gunicorn-worker"),
    )
    worker.tpool = worker.get_thread_pool()
    exits = []

    def signal_lands_inside_submit():
        # Where the main thread is when SIGQUIT's handler runs: inside submit(), holding
        # the pool's lock (CPython issue 121649; the stack a hung worker showed).
        with worker.tpool._shutdown_lock:
            try:
                worker.handle_quit(signal.SIGQUIT, None)
            except SystemExit as exc:
                exits.append(exc.code)

    # A thread of its own, so that the deadlock this guards against cannot hang the suite.
    handler = threading.Thread(target=signal_lands_inside_submit, daemon=True)
    handler.start()
    handler.join(timeout=10)
    assert exits == [0]
    assert worker.alive is False
    worker.tpool.shutdown()
    worker.tmp.close()
