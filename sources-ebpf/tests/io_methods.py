# The syscall paths the agent's kernel tests drive, shared by peer.py (loopback) and
# netns_peer.py (a veth pair between network namespaces): each moves an exact byte count with
# one chosen send or receive method.
# Send methods: send, sendall, write, writev, sendmsg (three buffers), sendmmsg (libc through
# ctypes: Python has no sendmmsg), sendfile (from a temporary file), splice (from a pipe).
# Receive methods: recv, recvfrom, recvmsg, recvmsg_into, read, readv, peek_then_recv (a
# MSG_PEEK read the agent must not count, then the read), splice (into a pipe), recvmmsg (libc
# through ctypes, MSG_WAITFORONE: after the first message the rest are non-blocking, so EAGAIN
# results go through the tracepoint too).
import ctypes, os, socket, tempfile

def starttime():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def payload(n):
    block = bytes((i * 7) & 0xFF for i in range(1 << 16))
    return (block * (n // len(block) + 1))[:n]

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

MSG_WAITFORONE = 0x10000

def sendmmsg(fd, data):
    """Sends all of data with sendmmsg(2): up to 8 messages per call, 3 iovecs per message."""
    buf = ctypes.create_string_buffer(data, len(data))
    base = ctypes.addressof(buf)
    sent = 0
    while sent < len(data):
        msgs = (mmsghdr * 8)()
        keep = []
        off, k = sent, 0
        while k < 8 and off < len(data):
            size = min(len(data) - off, 40_000 + 1_111 * k)
            third = max(1, size // 3)
            parts = [(off, third), (off + third, min(third, size - third)),
                     (off + 2 * third, max(0, size - 2 * third))]
            parts = [(o, l) for o, l in parts if l > 0]
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

def recvmmsg(fd, want):
    """One recvmmsg(2) call for at most want bytes over up to 4 messages; returns bytes read."""
    sizes = []
    left = want
    while left > 0 and len(sizes) < 4:
        s = min(left, 9_000 + 3_000 * len(sizes))
        sizes.append(s)
        left -= s
    bufs = [ctypes.create_string_buffer(s) for s in sizes]
    msgs = (mmsghdr * len(sizes))()
    keep = []
    for i, (b, s) in enumerate(zip(bufs, sizes)):
        iov = (iovec * 1)(iovec(ctypes.addressof(b), s))
        keep.append(iov)
        msgs[i].msg_hdr.msg_iov = iov
        msgs[i].msg_hdr.msg_iovlen = 1
    n = libc.recvmmsg(fd, msgs, len(sizes), MSG_WAITFORONE, None)
    if n < 0:
        raise OSError(ctypes.get_errno(), "recvmmsg")
    return sum(msgs[i].msg_len for i in range(n))

def send_with(sock, method, n):
    data = payload(n)
    fd = sock.fileno()
    if method == "send":
        sent = 0
        while sent < n:
            sent += sock.send(data[sent:sent + 100_000])
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
            put = os.write(w, data[sent:sent + 32768])
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
        want = min(n - got, 50_000)
        if method == "recv":
            k = len(sock.recv(want))
        elif method == "recvfrom":
            k = len(sock.recvfrom(want)[0])
        elif method == "recvmsg":
            k = len(sock.recvmsg(want)[0])
        elif method == "read":
            k = len(os.read(fd, want))
        elif method == "readv":
            bufs = [bytearray(7), bytearray(max(1, want - 7))]
            k = os.readv(fd, bufs)
        elif method == "recvmsg_into":
            bufs = [bytearray(10), bytearray(max(1, want - 10))]
            k = sock.recvmsg_into(bufs)[0]
        elif method == "peek_then_recv":
            sock.recv(want, socket.MSG_PEEK)
            k = len(sock.recv(want))
        elif method == "splice":
            r, w = os.pipe()
            k = os.splice(fd, w, want)
            os.read(r, k)
            os.close(r)
            os.close(w)
        elif method == "recvmmsg":
            k = recvmmsg(fd, want)
        else:
            raise SystemExit("unknown recv method " + method)
        if k == 0:
            raise SystemExit("peer closed early after %d of %d bytes" % (got, n))
        got += k

def wait_eof(sock):
    while sock.recv(65536):
        pass
