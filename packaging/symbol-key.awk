# A symbol's key: its name without what changes from build to build (legacy mangling's 17h<16 hex>E
# hash, v0 mangling's crate disambiguators Cs<base62>_, LLVM's .llvm.N and .N clone suffixes).
#   mode=key:      prints the key of each name read (symbol-order.sh writes keys).
#   mode=resolve:  reads this build's symbol names, then the list of keys, and prints, in the list's
#                  order, every symbol whose key is listed (a key that matches none is printed as it
#                  is: C functions have no hash).
function key(n) {
  gsub(hash, "", n)
  gsub(/Cs[0-9A-Za-z]+_/, "Cs_", n)
  sub(/\.llvm\.[0-9]+$/, "", n)
  sub(/\.[0-9]+$/, "", n)
  return n
}
BEGIN {
  h = "[0-9a-f]"
  hash = "17h" h h h h h h h h h h h h h h h h "E"
}
mode == "key" { print key($1); next }
NR == FNR { k = key($1); names[k] = names[k] "\n" $1; next }
$1 in names { printf "%s", substr(names[$1], 2) "\n"; delete names[$1]; next }
{ print $1 }
