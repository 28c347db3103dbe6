# Test peer for tests/loopback.rs: moves known byte counts over TCP with one chosen syscall path.
#   peer.py server HOST RECV_METHOD EXPECT REPLY      -> prints "PORT STARTTIME", serves one conn
#   peer.py client HOST PORT SEND_METHOD BYTES REPLY  -> prints "STARTTIME"
#   peer.py many HOST PORT N                          -> N sequential connections, conn i sends i+1
#   peer.py many_server HOST N                        -> accepts N conns, echoes each one's length
# Send and receive methods: io_methods.py.
import socket, sys
from io_methods import family, recv_with, send_with, starttime, wait_eof

def main():
    mode, host = sys.argv[1], sys.argv[2]
    if mode == "server":
        method, expect, reply = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        lst = socket.socket(family(host), socket.SOCK_STREAM)
        lst.bind((host, 0))
        lst.listen(1)
        print(lst.getsockname()[1], starttime(), flush=True)
        conn, _ = lst.accept()
        recv_with(conn, method, expect)
        conn.sendall(b"r" * reply)
        wait_eof(conn)
        conn.close()
        lst.close()
    elif mode == "client":
        port, method, n, reply = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        print(starttime(), flush=True)
        c = socket.create_connection((host, port))
        send_with(c, method, n)
        recv_with(c, "recv", reply)
        c.close()
    elif mode == "many_server":
        n = int(sys.argv[3])
        lst = socket.socket(family(host), socket.SOCK_STREAM)
        lst.bind((host, 0))
        lst.listen(64)
        print(lst.getsockname()[1], starttime(), flush=True)
        for _ in range(n):
            conn, _ = lst.accept()
            total = 0
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                total += len(b)
            conn.sendall(b"e" * total)
            conn.close()
        lst.close()
    elif mode == "many":
        port, n = int(sys.argv[3]), int(sys.argv[4])
        print(starttime(), flush=True)
        for i in range(n):
            c = socket.create_connection((host, port))
            c.sendall(b"m" * (i + 1))
            c.shutdown(socket.SHUT_WR)
            recv_with(c, "recv", i + 1)
            wait_eof(c)
            c.close()
    else:
        raise SystemExit("unknown mode " + mode)

main()
