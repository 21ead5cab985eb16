"""TLS hot-reload driver.

  tls_rotate.py setup MODE DIR            CA + first pair in DIR's layout for MODE
  tls_rotate.py rotate MODE DIR PORT N    N rotations by MODE while a client loops over handshakes;
                                          then a broken pair, a mismatched key and an expired cert
MODE: inplace | rename | symlink (the Kubernetes/Nomad `..data` swap)
"""
import datetime, hashlib, os, shutil, socket, ssl, sys, threading, time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress

NAME = "registry.test"

def now():
    return datetime.datetime.now(datetime.timezone.utc)

def ca(dir_):
    p = os.path.join(os.path.dirname(dir_.rstrip("/")), "ca")
    if os.path.exists(p + ".pem"):
        key = serialization.load_pem_private_key(open(p + ".key", "rb").read(), None)
        return x509.load_pem_x509_certificate(open(p + ".pem", "rb").read()), key, p + ".pem"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(days=1)).not_valid_after(now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    open(p + ".key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    open(p + ".pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, p + ".pem"

def leaf(dir_, expired=False):
    ca_cert, ca_key, _ = ca(dir_)
    key = ec.generate_private_key(ec.SECP256R1())
    nb, na = (now() - datetime.timedelta(days=10), now() - datetime.timedelta(days=1)) if expired else \
             (now() - datetime.timedelta(hours=1), now() + datetime.timedelta(days=10))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            hashlib.sha256(der).hexdigest())

def install(mode, dir_, crt, key, n=[0]):
    n[0] += 1
    if mode == "inplace":
        for name, data in (("tls.crt", crt), ("tls.key", key)):
            with open(os.path.join(dir_, name), "r+b" if os.path.exists(os.path.join(dir_, name)) else "wb") as f:
                f.seek(0); f.truncate(); f.write(data); f.flush(); os.fsync(f.fileno())
    elif mode == "rename":
        for name, data in (("tls.crt", crt), ("tls.key", key)):
            tmp = os.path.join(dir_, f".{name}.new")
            open(tmp, "wb").write(data)
            os.rename(tmp, os.path.join(dir_, name))
    else:  # the ..data symlink swap of Kubernetes projected volumes and Nomad templates
        ts = os.path.join(dir_, f"..2026_{time.time_ns()}_{n[0]}")
        os.mkdir(ts)
        open(os.path.join(ts, "tls.crt"), "wb").write(crt)
        open(os.path.join(ts, "tls.key"), "wb").write(key)
        old = os.path.realpath(os.path.join(dir_, "..data")) if os.path.lexists(os.path.join(dir_, "..data")) else None
        tmp = os.path.join(dir_, "..data_tmp")
        os.symlink(os.path.basename(ts), tmp)
        os.rename(tmp, os.path.join(dir_, "..data"))
        for name in ("tls.crt", "tls.key"):
            if not os.path.lexists(os.path.join(dir_, name)):
                os.symlink(os.path.join("..data", name), os.path.join(dir_, name))
        if old and os.path.isdir(old):
            shutil.rmtree(old)

def served(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=NAME) as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()

def setup(mode, dir_):
    os.makedirs(dir_, exist_ok=True)
    crt, key, _ = leaf(dir_)
    install(mode, dir_, crt, key)

def rotate(mode, dir_, port, n):
    port, n = int(port), int(n)
    cafile = ca(dir_)[2]
    stop, stats = threading.Event(), {"ok": 0, "fail": [], "alpn": set()}
    def loop():
        while not stop.is_set():
            try:
                served(port, cafile)
                stats["ok"] += 1
            except Exception as e:
                stats["fail"].append(repr(e))
    client = threading.Thread(target=loop, daemon=True)
    client.start()
    def wait_for(fp, limit=2.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if served(port, cafile) == fp:
                return time.monotonic() - t0
            time.sleep(0.02)
        return None
    try:
        check(mode, dir_, port, n, cafile, stats, wait_for)
    finally:
        stop.set()
        client.join()
    assert not stats["fail"], f"{mode}: {len(stats['fail'])} failed handshakes, e.g. {stats['fail'][:3]}"
    latencies = stats["latencies"]
    latencies.sort()
    print(f"{mode}: {n} rotations, {stats['ok']} handshakes, 0 failed; new cert served after "
          f"median {latencies[len(latencies)//2]*1000:.0f} ms, max {latencies[-1]*1000:.0f} ms")

def check(mode, dir_, port, n, cafile, stats, wait_for):
    latencies = stats["latencies"] = []
    for i in range(n):
        crt, key, fp = leaf(dir_)
        install(mode, dir_, crt, key)
        lat = wait_for(fp)
        assert lat is not None, f"{mode} rotation {i}: new certificate not served within 2 s"
        latencies.append(lat)
    current = served(port, cafile)
    good_crt, good_key, good_fp = leaf(dir_)
    other_crt, other_key, _ = leaf(dir_)
    exp_crt, exp_key, _ = leaf(dir_, expired=True)
    for label, crt, key in (("broken PEM", b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", good_key),
                            ("mismatched key", good_crt, other_key),
                            ("expired certificate", exp_crt, exp_key)):
        install(mode, dir_, crt, key)
        time.sleep(1.0)
        assert served(port, cafile) == current, f"{mode}: a {label} replaced the certificate in service"
        print(f"  {mode}: {label} refused, previous certificate still served")
    install(mode, dir_, good_crt, good_key)
    assert wait_for(good_fp) is not None, f"{mode}: a good pair after refused ones was not picked up"

if __name__ == "__main__":
    {"setup": setup, "rotate": rotate}[sys.argv[1]](*sys.argv[2:])
