// The handler of the density and backlog runs (bench/src/density.rs, backlog.rs): it answers
// at once, so that what is measured is denorun's own work.
export default { request(req: any) { return { code: 200, ref: req.ref }; } };
