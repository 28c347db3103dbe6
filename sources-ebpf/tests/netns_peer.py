# Test peer for tests/netns.rs, run inside a network namespace by `ip netns exec`.
# Every mode prints its own pid and start time first, so the test knows which process the agent
# must attribute each socket to.
#   server HOST RECV_METHOD EXPECT REPLY   -> "PORT PID STARTTIME"; serves one connection
#   client HOST PORT SEND_METHOD BYTES REPLY
#                                          -> "PID STARTTIME", then "LOCALPORT" once connected
#   conc_server HOST N                     -> "PORT PID STARTTIME"; N connections at once, one
#                                             thread each: reads to EOF, replies reply_for(total)
#   conc_client HOST PORT BYTES GOFILE     -> "PID STARTTIME LOCALPORT" once connected, then
#                                             waits for GOFILE to exist before sending
# Send and receive methods: io_methods.py.
import os, signal, socket, sys, threading, time
from io_methods import family, payload, recv_with, send_with, starttime, wait_eof

# Never outlive a test that was killed: SIGALRM ends the process after 30 s. (Not socket
# timeouts: they would make the sockets non-blocking and change the syscall paths.)
signal.alarm(30)

def reply_for(total):
    return total // 10 + 1

def main():
    mode, host = sys.argv[1], sys.argv[2]
    if mode == "server":
        method, expect, reply = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        lst = socket.socket(family(host), socket.SOCK_STREAM)
        lst.bind((host, 0))
        lst.listen(1)
        print(lst.getsockname()[1], os.getpid(), starttime(), flush=True)
        conn, _ = lst.accept()
        recv_with(conn, method, expect)
        conn.sendall(b"r" * reply)
        wait_eof(conn)
        conn.close()
        lst.close()
    elif mode == "client":
        port, method, n, reply = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        print(os.getpid(), starttime(), flush=True)
        c = socket.create_connection((host, port))
        print(c.getsockname()[1], flush=True)
        send_with(c, method, n)
        recv_with(c, "recv", reply)
        c.close()
    elif mode == "conc_server":
        n = int(sys.argv[3])
        lst = socket.socket(family(host), socket.SOCK_STREAM)
        lst.bind((host, 0))
        lst.listen(n + 8)
        print(lst.getsockname()[1], os.getpid(), starttime(), flush=True)
        errors = []

        def serve(conn):
            try:
                total = 0
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    total += len(b)
                conn.sendall(b"e" * reply_for(total))
                conn.close()
            except Exception as e:  # reported through the exit status
                errors.append(e)

        threads = []
        for _ in range(n):
            conn, _ = lst.accept()
            t = threading.Thread(target=serve, args=(conn,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        lst.close()
        if errors:
            raise SystemExit("conc_server: %r" % errors)
    elif mode == "conc_client":
        port, n, gofile = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        c = socket.create_connection((host, port))
        print(os.getpid(), starttime(), c.getsockname()[1], flush=True)
        deadline = time.monotonic() + 20
        while not os.path.exists(gofile):
            if time.monotonic() > deadline:
                raise SystemExit("conc_client: no go signal")
            time.sleep(0.005)
        c.sendall(payload(n))
        c.shutdown(socket.SHUT_WR)
        recv_with(c, "recv", reply_for(n))
        wait_eof(c)
        c.close()
    else:
        raise SystemExit("unknown mode " + mode)

main()
