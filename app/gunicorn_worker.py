"""gunicorn's threaded worker, with a quick shutdown that cannot deadlock.

gunicorn's gthread worker answers SIGINT and SIGQUIT (quick shutdown) by shutting its
thread pool down inside the signal handler. The handler runs on the main thread, between
two bytecodes of whatever it was doing; when that was ThreadPoolExecutor.submit (handing
a new connection to a thread), the pool's lock is already held by that same thread, and
shutdown() waits for it forever (CPython issue 121649). The worker then hangs until the
master kills it after GUNICORN_GRACEFUL_TIMEOUT, and a quick shutdown under load takes
that long. Seen here: 3 of 60 quick shutdowns of a worker taking new connections hung
(none of 45 with this worker).

The pool needs no shutdown there: the worker exits right after, and the interpreter's
exit wakes the pool's threads and waits for them (concurrent.futures.thread._python_exit),
as shutdown(wait=False) followed by that exit did.
"""

from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker


class ThreadWorker(GunicornThreadWorker):
    """gunicorn's gthread worker; SIGINT and SIGQUIT no longer take the pool's lock."""

    def handle_quit(self, sig, frame):
        # gthread's own, minus its tpool.shutdown: recheck on a gunicorn upgrade.
        Worker.handle_quit(self, sig, frame)
