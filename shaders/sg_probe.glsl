// Test/diagnostic program: evaluates the SG functions of include/ for per-pixel inputs stored in
// float textures (normal, view, albedo, roughness/metallic) and writes linear float results.
// MODE 0: shade_sg, 1: sg_irradiance(normal), 2: sg_eval(normal), 3: shade_preintegrated.
#include "sg.glsl"
#include "brdf.glsl"
#include "sg_preintegrated.glsl"

#if defined(VERTEX_SHADER)
in vec2 in_ndc;
void main() { gl_Position = vec4(in_ndc, 0.0, 1.0); }
#endif

#if defined(FRAGMENT_SHADER)
uniform sampler2D u_normal;
uniform sampler2D u_view;
uniform sampler2D u_albedo;
uniform sampler2D u_material;
out vec4 f_value;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec3 n = texelFetch(u_normal, p, 0).xyz;
    vec3 v = texelFetch(u_view, p, 0).xyz;
    vec3 a = texelFetch(u_albedo, p, 0).xyz;
    vec2 m = texelFetch(u_material, p, 0).xy;
#if MODE == 0
    f_value = vec4(shade_sg(n, v, a, m.x, m.y), 1.0);
#elif MODE == 3
    f_value = vec4(shade_preintegrated(n, v, a, m.x, m.y), 1.0);
#elif MODE == 1
    f_value = vec4(sg_irradiance(n), 1.0);
#else
    f_value = vec4(sg_eval(n), 1.0);
#endif
}
#endif
