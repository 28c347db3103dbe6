# Test peer for tests/loopback.rs: moves known byte counts over TCP with one chosen syscall path.
#   peer.py server HOST RECV_METHOD EXPECT REPLY      -> prints "PORT STARTTIME", serves one conn
#   peer.py client HOST PORT SEND_METHOD BYTES REPLY  -> prints "STARTTIME"
#   peer.py many HOST PORT N                          -> N sequential connections, conn i sends i+1
#   peer.py many_server HOST N                        -> accepts N conns, echoes each one's length
import ctypes, os, socket, sys, tempfile

def starttime():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

libc = ctypes.CDLL(None, use_errno=True)

class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]

class mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", msghdr), ("msg_len", ctypes.c_uint)]

def sendmmsg(fd, data):
    """Sends all of data with sendmmsg(2) (Python has none): up to 4 messages of two iovecs
    per call."""
    buf = ctypes.create_string_buffer(data, len(data))
    base = ctypes.addressof(buf)
    sent = 0
    while sent < len(data):
        msgs = (mmsghdr * 4)()
        keep = []
        off, k = sent, 0
        while k < 4 and off < len(data):
            size = min(len(data) - off, 30_000 + 777 * k)
            half = (size + 1) // 2
            parts = [(o, l) for o, l in [(off, half), (off + half, size - half)] if l > 0]
            iovs = (iovec * len(parts))(*[iovec(base + o, l) for o, l in parts])
            keep.append(iovs)
            msgs[k].msg_hdr.msg_iov = iovs
            msgs[k].msg_hdr.msg_iovlen = len(parts)
            off += size
            k += 1
        n = libc.sendmmsg(fd, msgs, k, 0)
        if n < 0:
            raise OSError(ctypes.get_errno(), "sendmmsg")
        sent += sum(msgs[i].msg_len for i in range(n))

def send_with(sock, method, n):
    data = bytes((i * 7) & 0xFF for i in range(min(n, 1 << 16))) * (n // (1 << 16) + 1)
    data = data[:n]
    fd = sock.fileno()
    if method == "send":
        sent = 0
        while sent < n:
            sent += sock.send(data[sent:])
    elif method == "sendall":
        sock.sendall(data)
    elif method == "write":
        sent = 0
        while sent < n:
            sent += os.write(fd, data[sent:])
    elif method == "writev":
        sent = 0
        while sent < n:
            rest = data[sent:]
            third = max(1, len(rest) // 3)
            sent += os.writev(fd, [rest[:third], rest[third:2 * third], rest[2 * third:]])
    elif method == "sendmsg":
        sent = 0
        while sent < n:
            rest = data[sent:]
            sent += sock.sendmsg([rest[:100], rest[100:1000], rest[1000:]])
    elif method == "sendmmsg":
        sendmmsg(fd, data)
    elif method == "sendfile":
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            off = 0
            while off < n:
                off += os.sendfile(fd, f.fileno(), off, n - off)
    elif method == "splice":
        r, w = os.pipe()
        sent = 0
        while sent < n:
            chunk = data[sent:sent + 32768]
            put = os.write(w, chunk)
            moved = 0
            while moved < put:
                moved += os.splice(r, fd, put - moved)
            sent += put
        os.close(r)
        os.close(w)
    else:
        raise SystemExit("unknown send method " + method)

def recv_with(sock, method, n):
    fd = sock.fileno()
    got = 0
    while got < n:
        want = min(n - got, 50000)
        if method == "recv":
            k = len(sock.recv(want))
        elif method == "recvfrom":
            k = len(sock.recvfrom(want)[0])
        elif method == "recvmsg":
            k = len(sock.recvmsg(want)[0])
        elif method == "recvmsg_into":
            bufs = [bytearray(10), bytearray(max(1, want - 10))]
            k = sock.recvmsg_into(bufs)[0]
        elif method == "read":
            k = len(os.read(fd, want))
        elif method == "readv":
            bufs = [bytearray(7), bytearray(max(1, want - 7))]
            k = os.readv(fd, bufs)
        elif method == "peek_then_recv":
            sock.recv(want, socket.MSG_PEEK)
            k = len(sock.recv(want))
        elif method == "splice":
            r, w = os.pipe()
            k = os.splice(fd, w, want)
            os.read(r, k)
            os.close(r)
            os.close(w)
        else:
            raise SystemExit("unknown recv method " + method)
        if k == 0:
            raise SystemExit("peer closed early after %d of %d bytes" % (got, n))
        got += k

def wait_eof(sock):
    while sock.recv(65536):
        pass

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
