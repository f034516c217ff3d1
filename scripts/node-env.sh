# Sourced by demo.sh, test.sh and .ci/run: puts a Node.js >= 20 first on PATH (and in NODE, which the tests read)
# for the test upstream, whose oidc-provider 9 fails on Debian 12's Node 18 ("ReferenceError: crypto is not
# defined"). A new enough node on PATH is used as it is. Otherwise a pinned Node.js binary comes from the npm
# registry into .local/node, once: the package node-<os>-<arch> is the binary that the npm package `node` fetches
# in its install script; naming it directly needs no install script, which npm may be set to skip.

dcr_node_min=20
dcr_node_pin=22.23.3

# The major version of the node on PATH, or nothing when there is none.
dcr_node_major() {
  local v
  v=$(node --version 2>/dev/null) || return 0
  v=${v#v}
  echo "${v%%.*}"
}

dcr_node_env() {
  local root dir major found pkg
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  dir="$root/.local/node"
  major=$(dcr_node_major)
  if [ "${major:-0}" -lt "$dcr_node_min" ]; then
    found=${major:+"node $(node --version)"}
    if [ "$("$dir/node_modules/.bin/node" --version 2>/dev/null)" != "v$dcr_node_pin" ]; then
      # npm runs on the old node too: it only has to unpack a package.
      if [ -z "$major" ] || ! command -v npm >/dev/null 2>&1; then
        echo "Node.js >= $dcr_node_min and npm are needed (found: ${found:-no node}, $(command -v npm || echo no npm))." >&2
        echo "On Debian: apt-get install -y nodejs npm; this script then fetches Node $dcr_node_pin itself if that node is older." >&2
        return 1
      fi
      pkg="node-$(node -p 'process.platform + "-" + process.arch')@$dcr_node_pin"
      echo "node-env: ${found} is older than $dcr_node_min; fetching $pkg from the npm registry into .local/node" >&2
      npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$pkg" >&2 || return 1
    fi
    PATH="$dir/node_modules/.bin:$PATH"
    major=$(dcr_node_major)
    if [ "${major:-0}" -lt "$dcr_node_min" ]; then
      echo "node-env: $dir/node_modules/.bin/node does not run as Node $dcr_node_pin" >&2
      return 1
    fi
  fi
  NODE=$(command -v node)
  export PATH NODE
}

dcr_node_env
