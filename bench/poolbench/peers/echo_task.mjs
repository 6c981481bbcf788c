// The trivial task of the dispatch benchmark, for piscina and tinypool:
// echo the small object {message: "hello"}.
export default function echo(req) {
  return { message: req.message };
}
