# Dev-only: answers the cases on stdin with droonga-engine 1.1.1's own code and Ruby's json
# gem, to make tests/vectors/droonga11.json (see make_droonga11_vectors.py). Not part of the
# project: neither Ruby nor droonga-engine is a dependency.
#
#   ruby -I <stubs> -I <droonga-engine-1.1.1>/lib droonga11_reference.rb < cases.json
require "json"
require "droonga/serf"
require "droonga/catalog/loader"

def answer(c)
  case c["kind"]
  when "pretty"
    JSON.pretty_generate(c["input"]) + "\n"
  when "state"
    serf = Droonga::Serf.new("127.0.0.1:10031/droonga")
    serf.define_singleton_method(:cluster_id) { c["input"]["cluster_id"] }
    serf.define_singleton_method(:current_members) { c["input"]["members"] }
    JSON.pretty_generate(serf.current_cluster_state) + "\n"
  when "catalog"
    Droonga::Catalog::Loader.new("/nonexistent/catalog.json").parse(c["input"]).cluster_id
  end
rescue Exception => e
  {"error" => e.class.name}
end

cases = JSON.parse(STDIN.read)
out = cases.collect do |c|
  c.merge("ruby" => answer(c))
end
STDOUT.write(JSON.generate({"ruby_version" => RUBY_VERSION, "json_version" => JSON::VERSION,
                            "cases" => out}, :ascii_only => true))
